package dist_test

import (
	"fmt"
	"testing"

	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
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
