package retain_test

import (
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/internal/memrange"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Reset used to clear the index and refill it topic by topic while matches
// ran: a match in between missed retained messages that were there before
// and after.
func TestMatchDuringResetSeesEveryMessage(t *testing.T) {
	r := memrange.New(kvpb.Keyspace_KEYSPACE_RETAIN, "", "")
	c := retain.New(1)
	for i := range 2000 {
		in := mustMarshal(&retainpb.SetRequest{Tenant: "t", Message: &retainpb.Message{Topic: fmt.Sprintf("f/%d", i), Payload: []byte("x")}})
		if _, err := c.Mutate(r, in); err != nil {
			t.Fatal(err)
		}
	}
	match := mustMarshal(&retainpb.MatchRequest{Tenant: "t", Filter: "f/1999", NowUnixMs: 1})

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
		resp := &retainpb.MatchResponse{}
		if err := proto.Unmarshal(out, resp); err != nil {
			t.Fatal(err)
		}
		if n := len(resp.Messages); n != 1 {
			t.Fatalf("match %d during a reset: %d messages, want 1", i, n)
		}
	}
}
