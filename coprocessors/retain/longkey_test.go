package retain_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/internal/topictest"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// TestLongRetainedTopics: a topic may be up to 65,535 bytes (MQTT-4.7.3-3);
// a retained message keyed by the whole of it was refused by the store's
// 4 KiB key limit. Long topics, two alike in their first KiB and the short
// topic that is exactly that KiB are stored, matched by long and short
// filters, deleted, and found again after a split between them and a
// restart (which rebuilds the index from the messages, since a long
// topic's key does not hold it).
func TestLongRetainedTopics(t *testing.T) {
	c := startRetainCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := retain.NewClient(c.Nodes[0].Router())
	long := topictest.Long("long", 60000)
	twin := long[:len(long)-1] + "!"
	head := long[:retain.MaxTopicInKey] // a short topic, the long ones' key prefix
	wild := long[:strings.LastIndexByte(long, '/')] + "/+"
	for _, tp := range []string{long, twin, head} {
		if k := retain.Key("acme", tp); len(k) > retain.MaxTopicInKey+100 {
			t.Fatalf("a key of %d bytes for a topic of %d", len(k), len(tp))
		}
	}
	set := func(topic, payload string) {
		t.Helper()
		r, err := cl.Set(ctx, &retainpb.SetRequest{Tenant: "acme", Message: &retainpb.Message{Topic: topic, Payload: []byte(payload)}})
		if err != nil || (r.Result != retainpb.Result_RESULT_OK && r.Result != retainpb.Result_RESULT_DELETED) {
			t.Fatalf("set a topic of %d bytes: %v %v", len(topic), r, err)
		}
	}
	set(long, "long")
	set(twin, "twin")
	set(head, "head")
	set("long/a", "short")
	match := func(cl *retain.Client, filter string) []string {
		t.Helper()
		r, err := cl.Match(ctx, &retainpb.MatchRequest{Tenant: "acme", Filter: filter})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range r.Messages {
			out = append(out, fmt.Sprintf("%d=%s", len(m.Topic), m.Payload))
		}
		slices.Sort(out)
		return out
	}
	check := func(when string, cl *retain.Client) {
		t.Helper()
		cases := []struct {
			filter string
			want   []string
		}{
			{long, []string{"60000=long"}},
			{wild, []string{"60000=long", "60000=twin"}},
			{"long/#", []string{"1024=head", "60000=long", "60000=twin", "6=short"}},
			{head, []string{"1024=head"}},
		}
		for _, tc := range cases {
			if got := match(cl, tc.filter); !slices.Equal(got, tc.want) {
				t.Fatalf("%s: filter of %d bytes matched %v, want %v", when, len(tc.filter), got, tc.want)
			}
		}
	}
	check("one range", cl)

	// Split between the long topics: keyed by their first KiB and digest,
	// they sort after head and before anything longer than it.
	split := retain.Key("acme", long)
	if tk := retain.Key("acme", twin); string(tk) < string(split) {
		split = tk
	}
	if _, err := c.Client(1).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "retain", Key: split}); err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	check("after a split", retain.NewClient(c.Nodes[2].Router()))
	for i := range c.Nodes {
		c.StopNode(i)
	}
	for i := range c.Nodes {
		c.StartNode(i)
	}
	c.WaitReady()
	check("after a restart", retain.NewClient(c.Nodes[1].Router()))

	set(twin, "") // deleted
	if got := match(cl, wild); !slices.Equal(got, []string{"60000=long"}) {
		t.Fatalf("after the twin's delete: %v", got)
	}
}
