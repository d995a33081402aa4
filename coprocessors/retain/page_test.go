package retain_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// TestRetainMatchPages: every retained message a filter matches is
// delivered at SUBSCRIBE (MQTT-3.3.1-9), not the first 1,000. A match
// comes in pages, each ending with the key the next starts at; paging
// through 2,500 messages, with a split made between two pages and some
// messages expired, gives each unexpired message once, in key order. A
// page also ends after MaxMatchBytes of messages.
func TestRetainMatchPages(t *testing.T) {
	c := startRetainCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cl := retain.NewClient(c.Nodes[0].Router())
	const n = 2500
	expired := time.Now().Add(-time.Minute).UnixMilli()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	slots := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		m := &retainpb.Message{Topic: fmt.Sprintf("dev/%04d/state", i), Payload: []byte(fmt.Sprint(i))}
		if i%100 == 7 {
			m.ExpiresUnixMs = expired
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			if r, err := cl.Set(ctx, &retainpb.SetRequest{Tenant: "acme", Message: m}); err != nil || r.Result != retainpb.Result_RESULT_OK {
				errs <- fmt.Errorf("set %s: %v %v", m.Topic, r, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Two ranges before the match, a third made while it pages.
	if _, err := c.Client(0).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "retain", Key: retain.Key("acme", "dev/0800")}); err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	if r, err := cl.Match(ctx, &retainpb.MatchRequest{Tenant: "acme", Filter: "dev/+/state"}); err != nil || len(r.Messages) > 1000 || len(r.Messages) < 990 || len(r.Next) == 0 {
		t.Fatalf("a match naming no limit: %d messages, next %q, %v; want a page of 1000 topics less the expired, and a next", len(r.Messages), r.GetNext(), err)
	}
	var got []string
	var from []byte
	pages := 0
	for {
		r, err := retain.NewClient(c.Nodes[pages%3].Router()).Match(ctx, &retainpb.MatchRequest{Tenant: "acme", Filter: "dev/+/state", Limit: 100, From: from})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Messages) > 100 {
			t.Fatalf("a page of %d messages, limit 100", len(r.Messages))
		}
		for _, m := range r.Messages {
			got = append(got, m.Topic)
		}
		pages++
		if len(r.Next) == 0 {
			break
		}
		if bytes.Compare(r.Next, from) <= 0 {
			t.Fatalf("page %d: next %q is not past %q", pages, r.Next, from)
		}
		from = r.Next
		if pages == 12 {
			if _, err := c.Client(1).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "retain", Key: retain.Key("acme", "dev/1700")}); err != nil {
				t.Fatal(ranges.FromStatus(err))
			}
		}
	}
	var want []string
	for i := 0; i < n; i++ {
		if i%100 != 7 {
			want = append(want, fmt.Sprintf("dev/%04d/state", i))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%d pages gave %d messages, want the %d unexpired once each in order", pages, len(got), len(want))
	}

	// Three messages of 2 MiB: the first page ends after two.
	big := bytes.Repeat([]byte("x"), 2<<20)
	for i := 0; i < 3; i++ {
		if _, err := cl.Set(ctx, &retainpb.SetRequest{Tenant: "big", Message: &retainpb.Message{Topic: fmt.Sprintf("b/%d", i), Payload: big}}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := cl.Match(ctx, &retainpb.MatchRequest{Tenant: "big", Filter: "#"})
	if err != nil || len(r.Messages) != 2 || len(r.Next) == 0 {
		t.Fatalf("first page of big messages: %d, next %q, %v", len(r.Messages), r.GetNext(), err)
	}
	r, err = cl.Match(ctx, &retainpb.MatchRequest{Tenant: "big", Filter: "#", From: r.Next})
	if err != nil || len(r.Messages) != 1 || r.Messages[0].Topic != "b/2" || len(r.Next) != 0 {
		t.Fatalf("second page of big messages: %d, next %q, %v", len(r.Messages), r.GetNext(), err)
	}
}
