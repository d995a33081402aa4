package inbox_test

import (
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/coprocessors/internal/memrange"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Reset used to clear the list of detached sessions and refill it one by
// one while the scheduler asked for due work: an expired session could be
// missing from the answer.
func TestDueDuringResetSeesEverySession(t *testing.T) {
	r := memrange.New(kvpb.Keyspace_KEYSPACE_INBOX, "", "")
	c := inbox.New(1)
	mutate := func(in *inboxpb.Input) {
		b, _ := proto.Marshal(in)
		if _, err := c.Mutate(r, b); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 500 {
		ib := fmt.Sprintf("i%03d", i)
		mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{
			Tenant: "t", Inbox: ib, Owner: "o", ExpirySeconds: 10, NowUnixMs: 1000}}})
		// Only the last one has expired by the time of the question.
		now := int64(2000)
		if i == 499 {
			now = 1000
		}
		mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{
			Tenant: "t", Inbox: ib, Incarnation: 1, Owner: "o", NowUnixMs: now}}})
	}
	due, _ := proto.Marshal(&inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Due{Due: &inboxpb.DueRequest{NowUnixMs: 11500}}})

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
		out, err := c.Query(r, due)
		if err != nil {
			t.Fatal(err)
		}
		resp := &inboxpb.QueryResponse{}
		if err := proto.Unmarshal(out, resp); err != nil {
			t.Fatal(err)
		}
		if n := len(resp.Due.GetExpired()); n != 1 {
			t.Fatalf("due %d during a reset: %d expired sessions, want 1", i, n)
		}
	}
}
