package retain_test

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestIndexAgainstBruteForce: the index's matches are the topics
// dist.MatchFilter matches, in key order, and paging through them (from
// past the last key) gives each once. Long levels make topics over
// MaxTopicInKey that share their first KiB, keyed by digest.
func TestIndexAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	levels := []string{"a", "b", "", "$s", "a-", strings.Repeat("x", 600)}
	topic := func() string {
		n := 1 + rng.Intn(4)
		s := levels[rng.Intn(len(levels))]
		for i := 1; i < n; i++ {
			s += "/" + levels[rng.Intn(len(levels))]
		}
		return s
	}
	keyPart := func(topic string) string { return string(retain.Key("t", topic)[2:]) }
	x := retain.NewIndex()
	var topics []string
	for i := 0; i < 400; i++ {
		tp := topic()
		if x.Add("t", tp) {
			topics = append(topics, tp)
		}
	}
	for i := 0; i < 50; i++ {
		victim := topics[rng.Intn(len(topics))]
		if !x.Remove("t", victim) {
			t.Fatalf("remove %q failed", victim)
		}
		topics = slices.DeleteFunc(topics, func(s string) bool { return s == victim })
	}
	long := 0
	for _, tp := range topics {
		if len(tp) > retain.MaxTopicInKey {
			long++
		}
	}
	if long < 10 {
		t.Fatalf("only %d long topics", long)
	}
	filters := []string{"#", "+", "a/#", "+/+", "a/+/b", "$s/#", "+/#", "/#", "a", "a//b", "$s/+", "a-/#"}
	for i := 0; i < 200; i++ {
		filters = append(filters, topic())
	}
	for _, f := range filters {
		var want []string
		for _, tp := range topics {
			if dist.MatchFilter(f, tp) {
				want = append(want, tp)
			}
		}
		slices.SortFunc(want, func(a, b string) int { return strings.Compare(keyPart(a), keyPart(b)) })
		if got := x.Match("t", f, "", 0); !slices.Equal(got, want) {
			t.Fatalf("filter %.40q: got %d topics, want %d", f, len(got), len(want))
		}
		var paged []string
		for from := ""; ; {
			page := x.Match("t", f, from, 7)
			paged = append(paged, page...)
			if len(page) < 7 {
				break
			}
			from = keyPart(page[len(page)-1]) + "\x00"
		}
		if !slices.Equal(paged, want) {
			t.Fatalf("filter %.40q in pages of 7: got %d topics, want %d", f, len(paged), len(want))
		}
	}
	if got := x.Match("t", "#", "", 3); len(got) != 3 {
		t.Fatalf("limit 3 returned %d", len(got))
	}
}

func TestRetainOnThreeReplicas(t *testing.T) {
	c := startRetainCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := retain.NewClient(c.Nodes[0].Router())
	set := func(tenant, topic, payload string, expires int64) *retainpb.SetResponse {
		t.Helper()
		r, err := cl.Set(ctx, &retainpb.SetRequest{Tenant: tenant, Message: &retainpb.Message{Topic: topic, Payload: []byte(payload), ExpiresUnixMs: expires}, MaxPerTenant: 100})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	match := func(cl *retain.Client, filter string, limit uint32) []string {
		t.Helper()
		r, err := cl.Match(ctx, &retainpb.MatchRequest{Tenant: "acme", Filter: filter, Limit: limit})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range r.Messages {
			out = append(out, m.Topic+"="+string(m.Payload))
		}
		return out
	}
	for i := 0; i < 30; i++ {
		set("acme", fmt.Sprintf("room/%02d/temp", i), fmt.Sprint(i), 0)
	}
	set("acme", "$SYS/uptime", "1", 0)
	set("other", "room/01/temp", "other", 0)
	set("acme", "room/expired", "old", time.Now().Add(-time.Second).UnixMilli())
	if got := match(cl, "room/+/temp", 0); len(got) != 30 || got[0] != "room/00/temp=0" {
		t.Fatalf("room/+/temp: %v", got)
	}
	if got := match(cl, "#", 0); len(got) != 30 {
		t.Fatalf("# must skip $SYS and the expired message: %d %v", len(got), got)
	}
	if got := match(cl, "$SYS/#", 0); !slices.Equal(got, []string{"$SYS/uptime=1"}) {
		t.Fatalf("$SYS/#: %v", got)
	}
	if r := set("acme", "room/05/temp", "", 0); r.Result != retainpb.Result_RESULT_DELETED {
		t.Fatalf("empty payload: %v", r)
	}
	if got := match(cl, "room/05/temp", 0); len(got) != 0 {
		t.Fatalf("deleted message still matched: %v", got)
	}
	if r := set("acme", "bad/+", "x", 0); r.Result != retainpb.Result_RESULT_INVALID {
		t.Fatalf("wildcard topic: %v", r)
	}
	if _, err := cl.Match(ctx, &retainpb.MatchRequest{Tenant: "acme", Filter: "a/#/b"}); err == nil {
		t.Fatal("bad filter accepted")
	}
	// Split in the middle of acme's topics; matches stay whole and ordered, the limit holds across ranges.
	resp, err := c.Client(0).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "retain", Key: retain.Key("acme", "room/15")})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	if got := match(retain.NewClient(c.Nodes[1].Router()), "room/+/temp", 0); len(got) != 29 {
		t.Fatalf("after split: %d %v", len(got), got)
	}
	if got := match(cl, "room/#", 20); len(got) != 20 || got[19] != "room/20/temp=20" {
		t.Fatalf("limit across ranges: %v", got)
	}
	for i := range c.Nodes {
		c.StopNode(i)
	}
	for i := range c.Nodes {
		c.StartNode(i)
	}
	c.WaitReady()
	if got := match(retain.NewClient(c.Nodes[2].Router()), "room/+/temp", 0); len(got) != 29 {
		t.Fatalf("after restart: %d", len(got))
	}
	_ = resp
}

// BenchmarkRetainMatch measures match latency with 100k retained topics on
// a one-store cluster, through the router and Raft's ReadIndex.
//
//	go test -run '^$' -bench RetainMatch ./coprocessors/retain/
func BenchmarkRetainMatch(b *testing.B) {
	c := rangestest.Start(b, 1, rangestest.Options{
		Coprocessors: map[kvpb.Keyspace]kvstore.CoprocessorFactory{kvpb.Keyspace_KEYSPACE_RETAIN: retain.New},
	})
	ctx := context.Background()
	cl := retain.NewClient(c.Nodes[0].Router())
	router := c.Nodes[0].Router()
	// Load 100k topics, 500 per proposal.
	for i := 0; i < 100_000; i += 500 {
		var ops []*kvpb.Op
		for j := i; j < i+500; j++ {
			in := mustMarshal(&retainpb.SetRequest{Tenant: "t", Message: &retainpb.Message{Topic: fmt.Sprintf("site/%d/dev/%d", j%100, j), Payload: []byte("v")}})
			k := retain.Key("t", fmt.Sprintf("site/%d/dev/%d", j%100, j))
			ops = append(ops, &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: k, Input: in}}})
		}
		if _, err := router.Write(ctx, kvpb.Keyspace_KEYSPACE_RETAIN, ops[0].GetCoproc().Key, nil, ops...); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name, filter string
		want         int
	}{{"exact", "site/7/dev/507", 1}, {"wildcard-1000", "site/7/dev/+", 1000}} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				r, err := cl.Match(ctx, &retainpb.MatchRequest{Tenant: "t", Filter: bc.filter, Limit: 1000})
				if err != nil || len(r.Messages) != bc.want {
					b.Fatalf("match: %v, %d messages", err, len(r.GetMessages()))
				}
			}
		})
	}
}
