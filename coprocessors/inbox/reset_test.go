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

// A queue key whose sequence number ends in the bytes 0x00 'm' (seq 109, or
// 0x016d...) looks like a metadata key by its last two bytes. Reset took it
// for one and, failing to decode the message as metadata, returned an
// error: after the balancer split a busy inbox range, every replica
// panicked in Reset ("corrupt inbox meta ... string field contains invalid
// UTF-8"), seen in make bench-cluster's offline scenario.
func TestResetSkipsQueueKeysThatEndLikeMeta(t *testing.T) {
	r := memrange.New(kvpb.Keyspace_KEYSPACE_INBOX, "", "")
	c := inbox.New(1)
	mutate := func(in *inboxpb.Input) {
		b, _ := proto.Marshal(in)
		if _, err := c.Mutate(r, b); err != nil {
			t.Fatal(err)
		}
	}
	mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{
		Tenant: "t", Inbox: "busy", Owner: "o", ExpirySeconds: 10, NowUnixMs: 1000}}})
	for i := range 120 {
		mutate(&inboxpb.Input{Op: &inboxpb.Input_Insert{Insert: &inboxpb.InsertRequest{Items: []*inboxpb.InsertItem{{
			Tenant: "t", Inbox: "busy", Message: &inboxpb.Message{Topic: "a/b", Payload: fmt.Appendf(nil, "\xff%d", i), Qos: 1,
				Properties: []byte{0x0a, 0x02, 0xff, 0xfe}}}}}}})
	}
	if err := c.Reset(r); err != nil {
		t.Fatalf("reset of an inbox with 120 queued messages: %v", err)
	}
	mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{
		Tenant: "t", Inbox: "busy", Incarnation: 1, Owner: "o", NowUnixMs: 1000}}})
	if err := c.Reset(r); err != nil {
		t.Fatal(err)
	}
	due, _ := proto.Marshal(&inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Due{Due: &inboxpb.DueRequest{NowUnixMs: 20000}}})
	out, err := c.Query(r, due)
	if err != nil {
		t.Fatal(err)
	}
	resp := &inboxpb.QueryResponse{}
	if err := proto.Unmarshal(out, resp); err != nil {
		t.Fatal(err)
	}
	if n := len(resp.Due.GetExpired()); n != 1 {
		t.Fatalf("after reset: %d expired sessions, want the one", n)
	}
}
