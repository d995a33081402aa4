package fanout

import (
	"fmt"
	"testing"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
)

func sub(t *testing.T, s string) dist.Subscription {
	t.Helper()
	p, err := dist.ParseSubscription(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRouteRefcount(t *testing.T) {
	x := New()
	if !x.Subscribe("t", "s1", sub(t, "a/+"), Options{}) {
		t.Fatal("the first subscriber must add the route")
	}
	if x.Subscribe("t", "s2", sub(t, "a/+"), Options{}) {
		t.Fatal("a second subscriber must not add it again")
	}
	if !x.Subscribe("other", "s1", sub(t, "a/+"), Options{}) {
		t.Fatal("routes are per tenant")
	}
	if found, last := x.Unsubscribe("t", "s1", sub(t, "a/+")); !found || last {
		t.Fatalf("unsubscribe of one of two: found %v last %v", found, last)
	}
	if found, _ := x.Unsubscribe("t", "s1", sub(t, "a/+")); found {
		t.Fatal("unsubscribing twice found it")
	}
	if found, last := x.Unsubscribe("t", "s2", sub(t, "a/+")); !found || !last {
		t.Fatal("the last subscriber leaving must remove the route")
	}
	if x.Has("t", sub(t, "a/+")) {
		t.Fatal("route still held")
	}
}

func TestDeliveries(t *testing.T) {
	x := New()
	x.Subscribe("t", "s1", sub(t, "a/+"), Options{QoS: 0, SubscriptionID: 7})
	x.Subscribe("t", "s1", sub(t, "a/#"), Options{QoS: 2, SubscriptionID: 3}) // overlapping: one copy, highest QoS
	x.Subscribe("t", "s2", sub(t, "a/b"), Options{QoS: 1, NoLocal: true})
	x.Subscribe("t", "s3", sub(t, "#"), Options{QoS: 1, RetainAsPublished: true})
	x.Subscribe("t", "g1", sub(t, "$share/g/a/b"), Options{QoS: 1})
	x.Subscribe("t", "g2", sub(t, "$share/g/a/b"), Options{QoS: 1})
	got := x.Deliveries("t", "a/b", "s2", 0)
	want := map[string]string{
		"s1": "qos 2 rap false ids [3 7]",
		"s3": "qos 1 rap true ids []",
	}
	shared := 0
	for _, d := range got {
		if d.Session == "g1" || d.Session == "g2" {
			shared++
			continue
		}
		w, ok := want[d.Session]
		if !ok {
			t.Fatalf("unexpected delivery %+v (s2 published with no-local)", d)
		}
		if g := fmt.Sprintf("qos %d rap %v ids %v", d.QoS, d.RetainAsPublished, fmtIDs(d.SubscriptionIDs)); g != w {
			t.Errorf("%s: %s, want %s", d.Session, g, w)
		}
		delete(want, d.Session)
	}
	if len(want) != 0 || shared != 1 {
		t.Fatalf("missing %v, shared deliveries %d (want 1)", want, shared)
	}
	// Another publisher: s2 gets it.
	if n := len(x.Deliveries("t", "a/b", "p", 0)); n != 4 {
		t.Fatalf("%d deliveries, want 4", n)
	}
	// $SYS-style topics skip leading wildcards.
	if got := x.Deliveries("t", "$SYS/x", "p", 0); len(got) != 0 {
		t.Fatalf("$-topic matched %v", got)
	}
	orphaned := x.RemoveSession("t", "s1", []dist.Subscription{sub(t, "a/+"), sub(t, "a/#")})
	if len(orphaned) != 2 {
		t.Fatalf("orphaned %v", orphaned)
	}
}

func fmtIDs(ids []uint32) string {
	if len(ids) == 0 {
		return "[]"
	}
	return fmt.Sprint(ids)
}
