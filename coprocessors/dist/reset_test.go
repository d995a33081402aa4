package dist_test

import (
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/internal/memrange"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Reset used to clear the trie and refill it route by route while matches
// ran: a match in between missed routes that were there before and after.
func TestMatchDuringResetSeesEveryRoute(t *testing.T) {
	r := memrange.New(kvpb.Keyspace_KEYSPACE_DIST, "", "")
	c := dist.New(1)
	add := func(filter, receiver string) {
		in, _ := proto.Marshal(&distpb.Input{Op: &distpb.Input_Add{Add: &distpb.AddRouteRequest{Route: &distpb.Route{
			Tenant: "t", Subscription: filter, Receiver: &distpb.Receiver{Kind: 1, Id: receiver}}}}})
		out, err := c.Mutate(r, in)
		if err != nil {
			t.Fatal(err)
		}
		o := &distpb.Output{}
		if err := proto.Unmarshal(out, o); err != nil || o.Result != distpb.Result_RESULT_OK {
			t.Fatalf("add %s: %v %v", filter, o, err)
		}
	}
	for i := range 2000 {
		add(fmt.Sprintf("f/%d", i), "r")
	}
	add("watched/topic", "w")
	match, _ := proto.Marshal(&distpb.MatchRequest{Tenant: "t", Topics: []string{"watched/topic"}})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := c.Reset(r); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for i := range 3000 {
		out, err := c.Query(r, match)
		if err != nil {
			t.Fatal(err)
		}
		resp := &distpb.MatchResponse{}
		if err := proto.Unmarshal(out, resp); err != nil {
			t.Fatal(err)
		}
		if n := len(resp.Topics[0].Matched); n != 1 {
			t.Fatalf("match %d during a reset: %d receivers, want 1", i, n)
		}
	}
}
