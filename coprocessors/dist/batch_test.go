package dist_test

import (
	"fmt"
	"testing"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// TestMatchBatchKeepsEachPublishersPick: a frontend batches the matches of
// several publishers' messages into one request; each topic's $oshare pick
// must be its own publisher's, the same member as a request of its own.
func TestMatchBatchKeepsEachPublishersPick(t *testing.T) {
	c := startCluster(t)
	cl := cl2(c)
	ctx := ctxT(t)
	for i := 0; i < 8; i++ {
		if _, err := cl.AddRoute(ctx, &distpb.AddRouteRequest{Route: route("acme", "$oshare/g/job/#", fmt.Sprintf("m%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	var pubs, topics []string
	for i := 0; i < 16; i++ {
		pubs = append(pubs, fmt.Sprintf("publisher-%d", i))
		topics = append(topics, "job/1")
	}
	batch, err := cl.Match(ctx, &distpb.MatchRequest{Tenant: "acme", Topics: topics, Publishers: pubs, Publisher: "ignored"})
	if err != nil {
		t.Fatal(err)
	}
	members := map[string]bool{}
	for i, p := range pubs {
		alone, err := cl.Match(ctx, &distpb.MatchRequest{Tenant: "acme", Topics: []string{"job/1"}, Publisher: p})
		if err != nil {
			t.Fatal(err)
		}
		got, want := batch.Topics[i].Matched, alone.Topics[0].Matched
		if len(got) != 1 || len(want) != 1 || got[0].Receiver.Id != want[0].Receiver.Id {
			t.Fatalf("publisher %s: batched pick %v, alone %v", p, got, want)
		}
		members[got[0].Receiver.Id] = true
	}
	if len(members) < 2 {
		t.Fatalf("16 publishers all picked %v: the batch used one publisher for all", members)
	}
}

// TestMatchBatchKeepsEachMessagesSeed: each batched topic's $share pick is
// its own message's seed's, the same member as a request of its own with
// that seed; before, the batch used the first message's seed plus the
// topic's index, so the picks of a batch were a sequence, not the
// messages' own.
func TestMatchBatchKeepsEachMessagesSeed(t *testing.T) {
	c := startCluster(t)
	cl := cl2(c)
	ctx := ctxT(t)
	for i := 0; i < 8; i++ {
		if _, err := cl.AddRoute(ctx, &distpb.AddRouteRequest{Route: route("acme", "$share/g/sj/#", fmt.Sprintf("m%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	pick := func(seed uint64) string {
		alone, err := cl.Match(ctx, &distpb.MatchRequest{Tenant: "acme", Topics: []string{"sj/1"}, Seed: seed})
		if err != nil || len(alone.Topics[0].Matched) != 1 {
			t.Fatalf("seed %d: %v %v", seed, alone, err)
		}
		return alone.Topics[0].Matched[0].Receiver.Id
	}
	var seeds []uint64
	var topics []string
	for i := 0; i < 16; i++ {
		seeds = append(seeds, uint64(i)*7919+12345)
		topics = append(topics, "sj/1")
	}
	batch, err := cl.Match(ctx, &distpb.MatchRequest{Tenant: "acme", Topics: topics, Seeds: seeds, Seed: 99})
	if err != nil {
		t.Fatal(err)
	}
	differ := false
	for i, seed := range seeds {
		got := batch.Topics[i].Matched
		if len(got) != 1 || got[0].Receiver.Id != pick(seed) {
			t.Fatalf("topic %d, seed %d: batched pick %v, alone %s", i, seed, got, pick(seed))
		}
		differ = differ || got[0].Receiver.Id != pick(99+uint64(i))
	}
	if !differ {
		t.Fatal("the seeds chosen pick as the first seed plus the index does: the test proves nothing")
	}
}

// TestRouteLimitIsTheTenantsAcrossRanges: a tenant's routes split over two
// ranges; the limit counts them all, not only those of the range that adds.
func TestRouteLimitIsTheTenantsAcrossRanges(t *testing.T) {
	c := startCluster(t)
	cl := cl2(c)
	ctx := ctxT(t)
	const limit = 10
	add := func(filter string) distpb.Result {
		t.Helper()
		out, err := cl.AddRoute(ctx, &distpb.AddRouteRequest{Route: route("acme", filter, "r"), MaxRoutesPerTenant: limit})
		if err != nil {
			t.Fatal(err)
		}
		return out.Result
	}
	for i := 0; i < 6; i++ {
		if r := add(fmt.Sprintf("a/%d", i)); r != distpb.Result_RESULT_OK {
			t.Fatalf("route %d: %v", i, r)
		}
	}
	// Split the tenant's span between the a/ and the z/ routes.
	resp, err := c.Client(0).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "dist", Key: []byte("acme\x00m\x00")})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	if lo, _ := dist.TenantSpan("acme"); string(resp.Right.Start) <= string(lo) {
		t.Fatalf("split at %q: not inside the tenant's span", resp.Right.Start)
	}
	for i := 0; i < 4; i++ {
		if r := add(fmt.Sprintf("z/%d", i)); r != distpb.Result_RESULT_OK {
			t.Fatalf("route z/%d: %v", i, r)
		}
	}
	// 10 routes in all, 4 of them in the right range: the 11th is refused
	// on either side.
	if r := add("z/4"); r != distpb.Result_RESULT_LIMIT {
		t.Fatalf("the 11th route (right range): %v, want the limit", r)
	}
	if r := add("a/9"); r != distpb.Result_RESULT_LIMIT {
		t.Fatalf("the 11th route (left range): %v, want the limit", r)
	}
}
