package dist_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/internal/topictest"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// longPrefix is the key prefix of the routes of a subscription longer than
// dist.MaxSubscriptionInKey, as docs/coprocessors.md lays it out: its first
// MaxSubscriptionInKey bytes as levels, then 0x01 and the hex SHA-256 of
// the whole as one more level.
func longPrefix(tenant, sub string) []byte {
	b := append([]byte(tenant), 0)
	for _, l := range strings.Split(sub[:dist.MaxSubscriptionInKey], "/") {
		b = append(append(b, l...), 0)
	}
	sum := sha256.Sum256([]byte(sub))
	b = append(append(b, 1), hex.EncodeToString(sum[:])...)
	return append(b, 0, 0)
}

// TestLongSubscriptionRoutes: a subscription may be up to 65,535 bytes
// (MQTT-4.7.3-3); a route keyed by the whole of it was refused by the
// store's 4 KiB key limit. Routes of long filters are added, matched,
// found again as duplicates, kept whole by a split (a $share group's
// members included) and removed; two filters alike in their first KiB are
// two routes.
func TestLongSubscriptionRoutes(t *testing.T) {
	c := startCluster(t)
	cl := dist.NewClient(c.Nodes[0].Router())
	ctx := ctxT(t)
	topic := topictest.Long("long", 60000)
	twin := topic[:len(topic)-1] + "!" // alike but for the last byte
	wild := topic[:strings.LastIndexByte(topic, '/')] + "/+"
	share := "$share/g/" + wild
	add := func(sub, id string, want distpb.Result) {
		t.Helper()
		out, err := cl.AddRoute(ctx, &distpb.AddRouteRequest{Route: route("acme", sub, id)})
		if err != nil || out.Result != want {
			t.Fatalf("add a filter of %d bytes for %s: %v %v, want %s", len(sub), id, out, err, want)
		}
	}
	add("short/+", "s", distpb.Result_RESULT_OK)
	add(topic, "exact", distpb.Result_RESULT_OK)
	add(twin, "twin", distpb.Result_RESULT_OK)
	add(wild, "wild", distpb.Result_RESULT_OK)
	for i := 0; i < 12; i++ {
		add(share, fmt.Sprintf("m%02d", i), distpb.Result_RESULT_OK)
	}
	add(topic, "exact", distpb.Result_RESULT_EXISTS)

	match := func(cl *dist.Client, topic string) []string {
		t.Helper()
		resp, err := cl.Match(ctx, &distpb.MatchRequest{Tenant: "acme", Topics: []string{topic}, Publisher: "p", Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range resp.Topics[0].Matched {
			who := m.Receiver.Id
			if strings.HasPrefix(m.Subscription, "$share/") {
				who = "group"
			}
			out = append(out, fmt.Sprintf("%d>%s", len(m.Subscription), who))
		}
		slices.Sort(out)
		return out
	}
	want := []string{fmt.Sprintf("%d>wild", len(wild)), fmt.Sprintf("%d>group", len(share)), fmt.Sprintf("%d>exact", len(topic))} // sorted
	if got := match(cl, topic); !slices.Equal(got, want) {
		t.Fatalf("match: %v, want %v", got, want)
	}

	// A split asked for among the group's members lands on the group's
	// start: its prefix ends in the two zero bytes of any filter's.
	prefix := longPrefix("acme", share)
	if len(prefix) > kvstore.MaxKeySize/2 {
		t.Fatalf("a route key prefix of %d bytes", len(prefix))
	}
	mid := append(append(slices.Clip(prefix), 1), "m06"...)
	resp, err := c.Client(1).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "dist", Key: mid})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	if string(resp.Right.Start) != string(prefix) {
		t.Fatalf("split at %q, want the group's start", resp.Right.Start[:min(len(resp.Right.Start), 64)])
	}
	sameOnEveryReplica(t, c, "acme", []string{topic, twin})
	if got := match(dist.NewClient(c.Nodes[2].Router()), topic); !slices.Equal(got, want) {
		t.Fatalf("after split: %v, want %v", got, want)
	}

	if out, err := cl.RemoveRoute(ctx, &distpb.RemoveRouteRequest{Route: route("acme", topic, "exact")}); err != nil || out.Result != distpb.Result_RESULT_OK {
		t.Fatalf("remove: %v %v", out, err)
	}
	if got := match(cl, topic); !slices.Equal(got, want[:2]) {
		t.Fatalf("after remove: %v, want %v", got, want[:2])
	}
	if got := match(cl, twin); !slices.Equal(got, append(want[:2:2], fmt.Sprintf("%d>twin", len(twin)))) {
		t.Fatalf("the twin: %v", got)
	}
}
