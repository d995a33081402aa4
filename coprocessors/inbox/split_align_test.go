package inbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// An admin split asked for inside one inbox's keys lands on the inbox's
// start (the rule the balancer's split keys follow), a second one inside the
// same inbox, now at its range's start, is refused, and the inbox keeps
// working: insert, fetch, commit, and every replica holds the same queue.
func TestAdminSplitInsideAnInboxLandsOnItsStart(t *testing.T) {
	e := start(t)
	for i := 0; i < 6; i++ {
		e.attach("acme", fmt.Sprintf("c%02d", i), true, 3600, nil, nil)
	}
	inc := e.attach("acme", "c03", false, 3600, nil, nil).Meta.Incarnation
	for i := 0; i < 10; i++ {
		e.insert("acme", "c03", 1, fmt.Sprint(i))
	}
	start := inbox.Prefix("acme", "c03")
	inside := append(append([]byte(nil), start...), 0x7f, 0, 0, 0, 0, 0, 0, 0, 1)
	resp, err := e.c.Client(0).Admin.Split(e.ctx, &rangespb.SplitRequest{Keyspace: "inbox", Key: inside})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	if string(resp.Right.Start) != string(start) {
		t.Fatalf("split at %q, want the inbox's start %q", resp.Right.Start, start)
	}
	if _, err := e.c.Client(1).Admin.Split(e.ctx, &rangespb.SplitRequest{Keyspace: "inbox", Key: inside}); err == nil {
		t.Fatal("a split inside the inbox that starts its range was not refused")
	} else {
		t.Logf("refused: %v", ranges.FromStatus(err))
	}

	e.inbox = inbox.NewClient(e.c.Nodes[2].Router())
	for i := 10; i < 12; i++ {
		if r := e.insert("acme", "c03", 1, fmt.Sprint(i)); r[0] != inboxpb.InsertResult_INSERT_OK {
			t.Fatalf("insert %d after the split: %v", i, r)
		}
	}
	want := ""
	for i := 0; i < 12; i++ {
		want += fmt.Sprintf("%d:%d ", i, i)
	}
	if got := payloads(e.fetch("acme", "c03", inc, 0).Qos12); got != want {
		t.Fatalf("fetch after the split: %q, want %q", got, want)
	}
	e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Commit{Commit: &inboxpb.CommitRequest{Tenant: "acme", Inbox: "c03", Incarnation: inc, Qos12Upto: 8}}})
	want = "8:8 9:9 10:10 11:11 "
	if got := payloads(e.fetch("acme", "c03", inc, 0).Qos12); got != want {
		t.Fatalf("fetch after commit: %q, want %q", got, want)
	}
	// The inbox on the left of the split is whole too.
	if r := e.insert("acme", "c02", 1, "x"); r[0] != inboxpb.InsertResult_INSERT_OK {
		t.Fatalf("insert into c02: %v", r)
	}
	if got := payloads(e.fetch("acme", "c02", 1, 0).Qos12); got != "0:x " {
		t.Fatalf("c02: %q", got)
	}
	inboxSameOnEveryReplica(t, e, "acme", "c03", inc, want)
}

// inboxSameOnEveryReplica fetches an inbox from each store's own replica of
// the range that holds it (a local read, no ReadIndex) until every replica
// returns want, and fails if one never does.
func inboxSameOnEveryReplica(t *testing.T, e *env, tenant, ib string, inc uint64, want string) {
	t.Helper()
	key := inbox.Prefix(tenant, ib)
	input, _ := proto.Marshal(&inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Fetch{Fetch: &inboxpb.FetchRequest{
		Tenant: tenant, Inbox: ib, Incarnation: inc}}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var answers []string
		for _, n := range e.c.Nodes {
			answer := "no replica"
			for _, r := range n.Store().Replicas() {
				d := r.Descriptor
				if d == nil || d.Keyspace != kvpb.Keyspace_KEYSPACE_INBOX || string(key) < string(d.Start) ||
					(len(d.End) > 0 && string(key) >= string(d.End)) {
					continue
				}
				q := &kvpb.Query{Ver: d.Ver, Ops: []*kvpb.Op{{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: key, Input: input}}}}}
				res, err := n.Store().Read(context.Background(), r.RangeID, q, true)
				if err != nil || res.Status != kvpb.Status_STATUS_OK {
					answer = fmt.Sprintf("error %v %v", err, res.GetStatus())
					continue
				}
				out := &inboxpb.QueryResponse{}
				_ = proto.Unmarshal(res.Results[0].Value, out)
				answer = payloads(out.GetFetch().GetQos12())
			}
			answers = append(answers, answer)
		}
		if answers[0] == want && answers[1] == want && answers[2] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas of inbox %s/%s disagree or differ from %q: %q", tenant, ib, want, answers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
