package inbox_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

type env struct {
	t     *testing.T
	c     *rangestest.Cluster
	ctx   context.Context
	inbox *inbox.Client
	pub   *countingPublisher
}

// countingPublisher counts wills and publishes them through dist, inbox and retain.
type countingPublisher struct {
	mu    sync.Mutex
	count map[string]int
	next  inbox.WillPublisher
}

func (p *countingPublisher) PublishWill(ctx context.Context, tenant, ib string, w *inboxpb.Will) error {
	p.mu.Lock()
	p.count[tenant+"/"+ib]++
	p.mu.Unlock()
	return p.next.PublishWill(ctx, tenant, ib, w)
}

func (p *countingPublisher) fired(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count[key]
}

func start(t *testing.T) *env {
	c := rangestest.Start(t, 3, rangestest.Options{Coprocessors: map[kvpb.Keyspace]kvstore.CoprocessorFactory{
		kvpb.Keyspace_KEYSPACE_DIST: dist.New, kvpb.Keyspace_KEYSPACE_INBOX: inbox.New, kvpb.Keyspace_KEYSPACE_RETAIN: retain.New,
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	e := &env{t: t, c: c, ctx: ctx, inbox: inbox.NewClient(c.Nodes[0].Router())}
	e.pub = &countingPublisher{count: map[string]int{}}
	return e
}

func (e *env) publisher(n *ranges.Node) inbox.WillPublisher {
	e.pub.next = &inbox.RoutePublisher{Dist: dist.NewClient(n.Router()), Inbox: inbox.NewClient(n.Router()), Retain: retain.NewClient(n.Router())}
	return e.pub
}

// tick runs every live node's scheduler once; only leaders act.
func (e *env) tick() {
	for _, n := range e.c.Nodes {
		if n != nil {
			if err := inbox.NewScheduler(inbox.SchedulerConfig{}, n, e.publisher(n)).Tick(e.ctx, time.Now()); err != nil {
				e.t.Logf("tick: %v", err)
			}
		}
	}
}

func (e *env) mutate(in *inboxpb.Input) *inboxpb.Output {
	e.t.Helper()
	o, err := e.inbox.Mutate(e.ctx, in)
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

func (e *env) attach(tenant, ib string, clean bool, expiry uint32, will *inboxpb.Will, limits *inboxpb.Limits) *inboxpb.AttachResponse {
	e.t.Helper()
	o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{
		Tenant: tenant, Inbox: ib, Owner: "fe-1", CleanStart: clean, ExpirySeconds: expiry, Will: will, Limits: limits,
		NowUnixMs: time.Now().UnixMilli()}}})
	if o.Attach == nil {
		e.t.Fatalf("attach %s/%s: %v", tenant, ib, o)
	}
	return o.Attach
}

func (e *env) insert(tenant, ib string, qos uint32, payloads ...string) []inboxpb.InsertResult {
	e.t.Helper()
	var items []*inboxpb.InsertItem
	for _, p := range payloads {
		items = append(items, &inboxpb.InsertItem{Tenant: tenant, Inbox: ib, Message: &inboxpb.Message{Topic: "t", Payload: []byte(p), Qos: qos}})
	}
	r, err := e.inbox.Insert(e.ctx, items)
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Results
}

func (e *env) fetch(tenant, ib string, inc, from uint64) *inboxpb.FetchResponse {
	e.t.Helper()
	r, err := e.inbox.Query(e.ctx, &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Fetch{Fetch: &inboxpb.FetchRequest{
		Tenant: tenant, Inbox: ib, Incarnation: inc, Qos12From: from}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Fetch
}

func payloads(ms []*inboxpb.QueuedMessage) string {
	s := ""
	for _, m := range ms {
		s += fmt.Sprintf("%d:%s ", m.Seq, m.Message.Payload)
	}
	return s
}

func TestInboxQueuesLimitsAndSessions(t *testing.T) {
	e := start(t)
	a := e.attach("acme", "c1", true, 3600, nil, nil)
	if a.SessionPresent || a.Meta.Incarnation != 1 {
		t.Fatalf("first attach: %v", a)
	}
	inc := a.Meta.Incarnation
	var ps []string
	for i := 0; i < 10; i++ {
		ps = append(ps, fmt.Sprint(i))
	}
	e.insert("acme", "c1", 1, ps...)
	if got := payloads(e.fetch("acme", "c1", inc, 0).Qos12); got != "0:0 1:1 2:2 3:3 4:4 5:5 6:6 7:7 8:8 9:9 " {
		t.Fatalf("fetch in order: %s", got)
	}
	e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Commit{Commit: &inboxpb.CommitRequest{Tenant: "acme", Inbox: "c1", Incarnation: inc, Qos12Upto: 5}}})
	if got := payloads(e.fetch("acme", "c1", inc, 0).Qos12); got != "5:5 6:6 7:7 8:8 9:9 " {
		t.Fatalf("after commit up to 5: %s", got)
	}
	// QoS 0 and QoS 1/2 are separate queues.
	e.insert("acme", "c1", 0, "q0")
	if f := e.fetch("acme", "c1", inc, 7); len(f.Qos0) != 1 || payloads(f.Qos12) != "7:7 8:8 9:9 " {
		t.Fatalf("fetch after 7: qos0 %d, qos12 %s", len(f.Qos0), payloads(f.Qos12))
	}
	// Resume keeps the queue; clean start empties it with a new incarnation.
	if a := e.attach("acme", "c1", false, 3600, nil, nil); !a.SessionPresent || a.Meta.Incarnation != inc {
		t.Fatalf("resume: %v", a)
	}
	a = e.attach("acme", "c1", true, 3600, nil, nil)
	if a.SessionPresent || a.Meta.Incarnation != inc+1 {
		t.Fatalf("clean start: %v", a)
	}
	if f := e.fetch("acme", "c1", inc+1, 0); len(f.Qos12) != 0 {
		t.Fatalf("clean start kept %d messages", len(f.Qos12))
	}
	if f := e.fetch("acme", "c1", inc, 0); f.Result != inboxpb.Result_RESULT_NO_INBOX {
		t.Fatalf("fetch of the old incarnation: %v", f.Result)
	}

	// Limits: drop the newest.
	e.attach("acme", "newest", true, 60, nil, &inboxpb.Limits{MaxQos12: 3})
	res := e.insert("acme", "newest", 1, "a", "b", "c", "d", "e")
	if res[2] != inboxpb.InsertResult_INSERT_OK || res[3] != inboxpb.InsertResult_INSERT_DROPPED || res[4] != inboxpb.InsertResult_INSERT_DROPPED {
		t.Fatalf("drop newest: %v", res)
	}
	if f := e.fetch("acme", "newest", 1, 0); payloads(f.Qos12) != "0:a 1:b 2:c " || f.Qos12Dropped != 2 {
		t.Fatalf("drop newest kept %s, counted %d", payloads(f.Qos12), f.Qos12Dropped)
	}
	// Limits: drop the oldest.
	e.attach("acme", "oldest", true, 60, nil, &inboxpb.Limits{MaxQos12: 3, DropOldest: true})
	e.insert("acme", "oldest", 1, "a", "b", "c", "d", "e")
	if f := e.fetch("acme", "oldest", 1, 0); payloads(f.Qos12) != "2:c 3:d 4:e " || f.Qos12Dropped != 2 {
		t.Fatalf("drop oldest kept %s, counted %d", payloads(f.Qos12), f.Qos12Dropped)
	}
	// An insert for an inbox that does not exist says so (dist drops the route).
	if r := e.insert("acme", "ghost", 1, "x"); r[0] != inboxpb.InsertResult_INSERT_NO_INBOX {
		t.Fatalf("insert into a missing inbox: %v", r)
	}
	// A detach by a connection that lost the session to a newer one changes nothing.
	o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{Tenant: "acme", Inbox: "c1", Incarnation: inc + 1, Owner: "fe-old", NowUnixMs: time.Now().UnixMilli()}}})
	if o.Result != inboxpb.Result_RESULT_CONFLICT {
		t.Fatalf("detach by a stale owner: %v", o)
	}
	if o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{Tenant: "a\x00b", Inbox: "x", Owner: "o"}}}); o.Result != inboxpb.Result_RESULT_INVALID {
		t.Fatalf("bad tenant: %v", o)
	}
}

func TestExpiryAndWillsFireOnceOnTheLeader(t *testing.T) {
	e := start(t)
	// A subscriber's inbox receives the will through a dist route.
	e.attach("acme", "listener", true, 3600, nil, nil)
	d := dist.NewClient(e.c.Nodes[1].Router())
	if o, err := d.AddRoute(e.ctx, &distpb.AddRouteRequest{Route: &distpb.Route{Tenant: "acme", Subscription: "status/#",
		Receiver: &distpb.Receiver{Kind: inbox.ReceiverInbox, Id: "listener"}}}); err != nil || o.Result != distpb.Result_RESULT_OK {
		t.Fatalf("route: %v %v", o, err)
	}
	// A stale route to an inbox that is gone is removed when the will finds it.
	if o, err := d.AddRoute(e.ctx, &distpb.AddRouteRequest{Route: &distpb.Route{Tenant: "acme", Subscription: "status/+",
		Receiver: &distpb.Receiver{Kind: inbox.ReceiverInbox, Id: "gone"}}}); err != nil || o.Result != distpb.Result_RESULT_OK {
		t.Fatalf("route: %v %v", o, err)
	}
	will := &inboxpb.Will{Topic: "status/dev1", Payload: []byte("offline"), Qos: 1, Retain: true, DelaySeconds: 1}
	a := e.attach("acme", "dev1", true, 2, will, nil)
	// Lost connection: the will is due after its 1 s delay, the session ends after 2 s.
	e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{Tenant: "acme", Inbox: "dev1",
		Incarnation: a.Meta.Incarnation, Owner: "fe-1", NowUnixMs: time.Now().UnixMilli(), SendWill: true}}})
	e.tick()
	if n := e.pub.fired("acme/dev1"); n != 0 {
		t.Fatalf("will fired before its delay: %d", n)
	}
	// A normal disconnect of another session discards its will.
	b := e.attach("acme", "dev2", true, 0, &inboxpb.Will{Topic: "status/dev2", Payload: []byte("x")}, nil)
	e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{Tenant: "acme", Inbox: "dev2",
		Incarnation: b.Meta.Incarnation, Owner: "fe-1", NowUnixMs: time.Now().UnixMilli()}}})
	deadline := time.Now().Add(20 * time.Second)
	for {
		e.tick()
		r, err := e.inbox.Query(e.ctx, &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Get{Get: &inboxpb.GetRequest{Tenant: "acme", Inbox: "dev1"}}})
		if err != nil {
			t.Fatal(err)
		}
		if r.Result == inboxpb.Result_RESULT_NO_INBOX {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session never expired: %v", r.Meta)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := e.pub.fired("acme/dev1"); n != 1 {
		t.Fatalf("will fired %d times, want once", n)
	}
	if n := e.pub.fired("acme/dev2"); n != 0 {
		t.Fatalf("the will of a normal disconnect fired %d times", n)
	}
	if f := e.fetch("acme", "listener", 1, 0); payloads(f.Qos12) != "0:offline " {
		t.Fatalf("the listener's inbox holds %q", payloads(f.Qos12))
	}
	m, err := retain.NewClient(e.c.Nodes[2].Router()).Match(e.ctx, &retainpb.MatchRequest{Tenant: "acme", Filter: "status/+"})
	if err != nil || len(m.Messages) != 1 || string(m.Messages[0].Payload) != "offline" {
		t.Fatalf("retained will: %v %v", m, err)
	}
	if mr, err := d.Match(e.ctx, &distpb.MatchRequest{Tenant: "acme", Topics: []string{"status/x"}}); err != nil || len(mr.Topics[0].Matched) != 1 {
		t.Fatalf("the stale route survived: %v %v", mr, err)
	}
	// dev2 ended at once (expiry 0).
	r, _ := e.inbox.Query(e.ctx, &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Get{Get: &inboxpb.GetRequest{Tenant: "acme", Inbox: "dev2"}}})
	if r.Result != inboxpb.Result_RESULT_NO_INBOX {
		t.Fatal("a session with expiry 0 outlived its connection")
	}
}

func TestInboxAcrossSplitAndRestart(t *testing.T) {
	e := start(t)
	for i := 0; i < 20; i++ {
		e.attach("acme", fmt.Sprintf("c%02d", i), true, 3600, nil, nil)
	}
	// Split between inboxes c09 and c10, at an inbox boundary.
	resp, err := e.c.Client(0).Admin.Split(e.ctx, &rangespb.SplitRequest{Keyspace: "inbox", Key: inbox.SplitKey("acme", "c10")})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	// One batch over both ranges.
	var items []*inboxpb.InsertItem
	for i := 0; i < 20; i++ {
		items = append(items, &inboxpb.InsertItem{Tenant: "acme", Inbox: fmt.Sprintf("c%02d", i), Message: &inboxpb.Message{Topic: "t", Payload: []byte(fmt.Sprint(i)), Qos: 1}})
	}
	r, err := inbox.NewClient(e.c.Nodes[2].Router()).Insert(e.ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	for i, res := range r.Results {
		if res != inboxpb.InsertResult_INSERT_OK {
			t.Fatalf("item %d: %v", i, res)
		}
	}
	// A detached session expires after a restart too: the leader rebuilds its list.
	e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{Tenant: "acme", Inbox: "c15",
		Incarnation: 1, Owner: "fe-1", NowUnixMs: time.Now().UnixMilli(), ExpirySeconds: ptr(uint32(1))}}})
	for i := range e.c.Nodes {
		e.c.StopNode(i)
	}
	for i := range e.c.Nodes {
		e.c.StartNode(i)
	}
	e.c.WaitReady()
	e.inbox = inbox.NewClient(e.c.Nodes[1].Router())
	for i := 0; i < 20; i++ {
		if f := e.fetch("acme", fmt.Sprintf("c%02d", i), 1, 0); i != 15 && payloads(f.Qos12) != fmt.Sprintf("0:%d ", i) {
			t.Fatalf("inbox c%02d after split and restart: %q", i, payloads(f.Qos12))
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		e.tick()
		if f := e.fetch("acme", "c15", 1, 0); f.Result == inboxpb.Result_RESULT_NO_INBOX {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("c15 did not expire after the restart")
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = resp
}

func ptr[T any](v T) *T { return &v }

// TestOwnershipAndOutOfOrderCommits: an attach that takes a session from a
// live owner names it; the old owner can no longer commit; single messages
// acknowledged out of order are removed and the head moves past them; a
// PUBREC'd message is remembered (released) until its PUBCOMP.
func TestOwnershipAndOutOfOrderCommits(t *testing.T) {
	e := start(t)
	a := e.attach("acme", "own", false, 3600, nil, nil)
	inc := a.Meta.Incarnation
	e.insert("acme", "own", 1, "0", "1", "2", "3")
	commit := func(owner string, done, released []uint64) *inboxpb.Output {
		return e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Commit{Commit: &inboxpb.CommitRequest{Tenant: "acme", Inbox: "own",
			Incarnation: inc, Owner: owner, Qos12Done: done, Qos12Released: released}}})
	}
	if o := commit("fe-1", []uint64{1, 3}, []uint64{2}); o.Result != inboxpb.Result_RESULT_OK {
		t.Fatalf("commit: %v", o)
	}
	if f := e.fetch("acme", "own", inc, 0); payloads(f.Qos12) != "0:0 2:2 " || f.Owner != "fe-1" {
		t.Fatalf("after out-of-order commit: %s owner %q", payloads(f.Qos12), f.Owner)
	}
	if o := commit("fe-1", []uint64{0}, nil); o.Meta.Qos12.Head != 2 || len(o.Meta.Released) != 1 || o.Meta.Released[0] != 2 {
		t.Fatalf("head %d released %v, want 2 [2]", o.Meta.Qos12.Head, o.Meta.Released)
	}
	// A second connection takes the session over from the live one.
	o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{Tenant: "acme", Inbox: "own",
		Owner: "fe-2", ExpirySeconds: 3600, NowUnixMs: time.Now().UnixMilli()}}})
	if !o.Attach.SessionPresent || o.Attach.PreviousOwner != "fe-1" || o.Attach.Meta.DupBelow != 4 {
		t.Fatalf("takeover: %v", o.Attach)
	}
	// The old owner's last acknowledgements count, and it learns it lost the session.
	if o := commit("fe-1", []uint64{2}, nil); o.Result != inboxpb.Result_RESULT_CONFLICT || o.Meta.Qos12.Head != 4 || len(o.Meta.Released) != 0 {
		t.Fatalf("commit by the old owner: %v", o)
	}
	if o := commit("fe-2", nil, nil); o.Result != inboxpb.Result_RESULT_OK {
		t.Fatalf("commit by the new owner: %v", o)
	}
	// A clean start hands back the session it discarded.
	o = e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{Tenant: "acme", Inbox: "own",
		Owner: "fe-3", CleanStart: true, NowUnixMs: time.Now().UnixMilli()}}})
	if o.Attach.SessionPresent || o.Attach.Discarded.GetIncarnation() != inc || o.Attach.PreviousOwner != "fe-2" {
		t.Fatalf("clean start: %v", o.Attach)
	}
	if ib, n := inbox.ParseReceiverID(inbox.ReceiverID("a:b", 7)); ib != "a:b" || n != 7 {
		t.Fatalf("receiver ID round trip: %q %d", ib, n)
	}
}

// TestDisplacedOwners: an attach that takes a live session over names the
// owners displaced since one last had its attach's answer (a commit or
// detach in its name), so that the newest owner tells all of them to close,
// not only its direct predecessor, whose attach's answer may have been lost.
func TestDisplacedOwners(t *testing.T) {
	e := start(t)
	attach := func(owner string, clean bool) *inboxpb.AttachResponse {
		t.Helper()
		o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{Tenant: "acme", Inbox: "dis",
			Owner: owner, CleanStart: clean, ExpirySeconds: 3600, NowUnixMs: time.Now().UnixMilli()}}})
		if o.Result != inboxpb.Result_RESULT_OK {
			t.Fatalf("attach %s: %v", owner, o)
		}
		return o.Attach
	}
	if a := attach("fe-1", false); len(a.Meta.Displaced) != 0 {
		t.Fatalf("new session: displaced %v", a.Meta.Displaced)
	}
	attach("fe-2", false) // its answer is lost: fe-1 is never told
	a := attach("fe-3", false)
	if a.PreviousOwner != "fe-2" || !slices.Equal(a.Meta.Displaced, []string{"fe-1", "fe-2"}) {
		t.Fatalf("previous %q displaced %v, want fe-2 [fe-1 fe-2]", a.PreviousOwner, a.Meta.Displaced)
	}
	// A clean start keeps the list too: the displaced hold the client ID.
	for _, o := range []string{"fe-4", "fe-5", "fe-6"} {
		a = attach(o, o == "fe-5")
	}
	if !slices.Equal(a.Meta.Displaced, []string{"fe-2", "fe-3", "fe-4", "fe-5"}) {
		t.Fatalf("displaced %v, want the newest %d", a.Meta.Displaced, 4)
	}
	// fe-6 commits: it had its answer, and told them.
	o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Commit{Commit: &inboxpb.CommitRequest{Tenant: "acme", Inbox: "dis",
		Incarnation: a.Meta.Incarnation, Owner: "fe-6"}}})
	if o.Result != inboxpb.Result_RESULT_OK || len(o.Meta.Displaced) != 0 {
		t.Fatalf("commit by the owner: %v", o)
	}
	if a = attach("fe-7", false); !slices.Equal(a.Meta.Displaced, []string{"fe-6"}) {
		t.Fatalf("displaced %v, want [fe-6]", a.Meta.Displaced)
	}
	// A detach by the owner clears it; an attach after it displaces no one.
	o = e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{Tenant: "acme", Inbox: "dis",
		Incarnation: a.Meta.Incarnation, Owner: "fe-7", NowUnixMs: time.Now().UnixMilli()}}})
	if o.Result != inboxpb.Result_RESULT_OK {
		t.Fatalf("detach: %v", o)
	}
	if a = attach("fe-8", false); a.PreviousOwner != "" || len(a.Meta.Displaced) != 0 {
		t.Fatalf("after a detach: previous %q displaced %v", a.PreviousOwner, a.Meta.Displaced)
	}
}

// TestInsertSeqsAndCommitBatch: an insert names the sequence number each
// message got (an owner told of it delivers it without fetching, so it must
// be the one a fetch would show), and CommitBatch commits the
// acknowledgements of many sessions in one call, each with its own result.
func TestInsertSeqsAndCommitBatch(t *testing.T) {
	e := start(t)
	incs := map[string]uint64{}
	for _, ib := range []string{"s1", "s2", "s3"} {
		incs[ib] = e.attach("acme", ib, true, 3600, nil, nil).Meta.Incarnation
	}
	var items []*inboxpb.InsertItem
	for i := range 6 {
		ib := []string{"s1", "s2", "s3"}[i%3]
		items = append(items, &inboxpb.InsertItem{Tenant: "acme", Inbox: ib, Message: &inboxpb.Message{Topic: "t", Payload: fmt.Appendf(nil, "%s-%d", ib, i), Qos: 1}})
	}
	items = append(items, &inboxpb.InsertItem{Tenant: "acme", Inbox: "s1", Message: &inboxpb.Message{Topic: "t", Payload: []byte("s1-q0"), Qos: 0}})
	r, err := e.inbox.Insert(e.ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Seqs) != len(items) {
		t.Fatalf("%d seqs for %d items", len(r.Seqs), len(items))
	}
	for _, ib := range []string{"s1", "s2", "s3"} {
		f := e.fetch("acme", ib, incs[ib], 0)
		got := map[string]uint64{}
		for _, m := range append(f.Qos12, f.Qos0...) {
			got[string(m.Message.Payload)] = m.Seq
		}
		for i, it := range items {
			if it.Inbox != ib {
				continue
			}
			if seq, ok := got[string(it.Message.Payload)]; !ok || seq != r.Seqs[i] {
				t.Fatalf("%s: insert said seq %d, fetch shows %d (found %v)", it.Message.Payload, r.Seqs[i], seq, ok)
			}
		}
	}
	outs, err := e.inbox.CommitBatch(e.ctx, []*inboxpb.CommitRequest{
		{Tenant: "acme", Inbox: "s1", Incarnation: incs["s1"], Qos12Done: []uint64{0}},
		{Tenant: "acme", Inbox: "s2", Incarnation: incs["s2"], Qos12Done: []uint64{1}, Owner: "someone-else"},
		{Tenant: "acme", Inbox: "gone", Incarnation: 1, Qos12Done: []uint64{0}},
		{Tenant: "", Inbox: "s3"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []inboxpb.Result{inboxpb.Result_RESULT_OK, inboxpb.Result_RESULT_CONFLICT, inboxpb.Result_RESULT_NO_INBOX, inboxpb.Result_RESULT_INVALID}
	for i, o := range outs {
		if o.GetResult() != want[i] {
			t.Fatalf("commit %d: %v, want %v", i, o.GetResult(), want[i])
		}
	}
	if got := payloads(e.fetch("acme", "s1", incs["s1"], 0).Qos12); got != "1:s1-3 " {
		t.Fatalf("s1 after its commit: %s", got)
	}
	// A conflicting owner's acknowledgements still apply (they are the client's).
	if got := payloads(e.fetch("acme", "s2", incs["s2"], 0).Qos12); got != "0:s2-1 " {
		t.Fatalf("s2 after its commit: %s", got)
	}
}

// TestWillClaim: the scheduler claims a due will before publishing it; a
// claim of a will not due yet, already claimed or cancelled by a reconnect
// is refused, so that a second leader (or a stale read) does not publish it
// again.
func TestWillClaim(t *testing.T) {
	e := start(t)
	now := time.Now().UnixMilli()
	will := &inboxpb.Will{Topic: "w/1", Payload: []byte("bye"), DelaySeconds: 60}
	o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{Tenant: "acme", Inbox: "wc",
		Owner: "fe-1", ExpirySeconds: 3600, Will: will, NowUnixMs: now}}})
	inc := o.Attach.Meta.Incarnation
	claim := func(at int64) inboxpb.Result {
		t.Helper()
		return e.mutate(&inboxpb.Input{Op: &inboxpb.Input_WillSent{WillSent: &inboxpb.WillSentRequest{
			Tenant: "acme", Inbox: "wc", Incarnation: inc, NowUnixMs: at}}}).Result
	}
	if r := claim(now); r != inboxpb.Result_RESULT_CONFLICT {
		t.Fatalf("claim of an attached session's will: %s", r)
	}
	e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{Tenant: "acme", Inbox: "wc",
		Incarnation: inc, Owner: "fe-1", NowUnixMs: now, SendWill: true}}})
	if r := claim(now + 1000); r != inboxpb.Result_RESULT_CONFLICT {
		t.Fatalf("claim before the will delay passed: %s", r)
	}
	if r := claim(now + 61_000); r != inboxpb.Result_RESULT_OK {
		t.Fatalf("claim of a due will: %s", r)
	}
	if r := claim(now + 62_000); r != inboxpb.Result_RESULT_CONFLICT {
		t.Fatalf("second claim of the same will: %s", r)
	}
}

// TestAwaitingRelChanges: a commit's rel_add and rel_remove change the
// inbox's unreleased QoS 2 packet IDs (the last change of an ID wins, no ID
// twice), only in the name of the inbox's owner: a former owner's changes
// are refused (CONFLICT) and leave the set as the new owner has it.
func TestAwaitingRelChanges(t *testing.T) {
	e := start(t)
	a := e.attach("acme", "rel", false, 3600, nil, nil)
	inc := a.Meta.Incarnation
	rel := func(owner string, add, remove []uint32) *inboxpb.Output {
		return e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Commit{Commit: &inboxpb.CommitRequest{Tenant: "acme", Inbox: "rel",
			Incarnation: inc, Owner: owner, RelAdd: add, RelRemove: remove}}})
	}
	// attach made fe-1 the owner.
	if o := rel("fe-1", []uint32{7, 9}, nil); o.Result != inboxpb.Result_RESULT_OK || !slices.Equal(o.Meta.AwaitingRel, []uint32{7, 9}) {
		t.Fatalf("add 7 9: %v", o)
	}
	if o := rel("fe-1", []uint32{9, 11}, []uint32{7}); o.Result != inboxpb.Result_RESULT_OK || !slices.Equal(o.Meta.AwaitingRel, []uint32{9, 11}) {
		t.Fatalf("add 9 11, remove 7: %v", o.Meta.GetAwaitingRel())
	}
	// A takeover: the new owner resumes with 9 and 11; the old one's
	// changes no longer apply.
	o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{Tenant: "acme", Inbox: "rel",
		Owner: "fe-2", ExpirySeconds: 3600, NowUnixMs: time.Now().UnixMilli()}}})
	if !slices.Equal(o.Attach.Meta.AwaitingRel, []uint32{9, 11}) {
		t.Fatalf("takeover resumed %v", o.Attach.Meta.AwaitingRel)
	}
	if o := rel("fe-1", []uint32{13}, []uint32{9}); o.Result != inboxpb.Result_RESULT_CONFLICT || !slices.Equal(o.Meta.AwaitingRel, []uint32{9, 11}) {
		t.Fatalf("old owner's change: %v", o)
	}
	if o := rel("fe-2", nil, []uint32{9, 11}); o.Result != inboxpb.Result_RESULT_OK || len(o.Meta.AwaitingRel) != 0 {
		t.Fatalf("new owner's release: %v", o)
	}
}

// TestGetMany: the records of many inboxes in one read per range, in the
// order asked, nil for an inbox that has none; a bad ID is refused.
func TestGetMany(t *testing.T) {
	e := start(t)
	a := e.attach("acme", "gm-1", false, 3600, nil, nil)
	b := e.attach("acme", "gm-3", false, 3600, nil, nil)
	metas, err := e.inbox.GetMany(e.ctx, []*inboxpb.GetRequest{
		{Tenant: "acme", Inbox: "gm-1"}, {Tenant: "acme", Inbox: "gm-2"}, {Tenant: "acme", Inbox: "gm-3"}, {Tenant: "other", Inbox: "gm-1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(metas) != 4 || metas[0].GetIncarnation() != a.Meta.Incarnation || metas[1] != nil ||
		metas[2].GetIncarnation() != b.Meta.Incarnation || metas[3] != nil {
		t.Fatalf("GetMany: %v", metas)
	}
	if _, err := e.inbox.GetMany(e.ctx, []*inboxpb.GetRequest{{Tenant: "acme", Inbox: ""}}); err == nil {
		t.Fatal("an empty inbox ID was accepted")
	}
}

// TestSessionBelongsToItsUser: a session that has not expired is attached
// to, resumed or discarded only by a connection of the user who made it;
// replace_foreign lets another user replace a detached one, never a live
// one.
func TestSessionBelongsToItsUser(t *testing.T) {
	e := start(t)
	attach := func(owner, user string, clean, replace bool) *inboxpb.Output {
		return e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{Tenant: "acme", Inbox: "shared-id",
			Owner: owner, User: user, CleanStart: clean, ExpirySeconds: 3600, ReplaceForeign: replace, NowUnixMs: time.Now().UnixMilli()}}})
	}
	a := attach("fe-1", "alice", false, false)
	if a.Result != inboxpb.Result_RESULT_OK || a.Attach.Meta.User != "alice" {
		t.Fatalf("alice's attach: %v", a)
	}
	inc := a.Attach.Meta.Incarnation
	e.insert("acme", "shared-id", 1, "for-alice")
	for _, tc := range []struct {
		user           string
		clean, replace bool
	}{{"mallory", false, false}, {"mallory", true, false}, {"", false, false}, {"mallory", false, true}, {"mallory", true, true}} {
		if o := attach("fe-2", tc.user, tc.clean, tc.replace); o.Result != inboxpb.Result_RESULT_FORBIDDEN || o.Attach != nil {
			t.Fatalf("%q (clean %v, replace %v) attaching to alice's live session: %v", tc.user, tc.clean, tc.replace, o)
		}
	}
	if f := e.fetch("acme", "shared-id", inc, 0); f.Owner != "fe-1" || payloads(f.Qos12) != "0:for-alice " {
		t.Fatalf("alice's session after refused attaches: owner %q, queue %s", f.Owner, payloads(f.Qos12))
	}
	// Detached, it is still alice's; with replace_foreign another user gets a fresh one.
	if o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{Tenant: "acme", Inbox: "shared-id",
		Incarnation: inc, Owner: "fe-1", NowUnixMs: time.Now().UnixMilli()}}}); o.Result != inboxpb.Result_RESULT_OK {
		t.Fatalf("detach: %v", o)
	}
	if o := attach("fe-2", "mallory", false, false); o.Result != inboxpb.Result_RESULT_FORBIDDEN {
		t.Fatalf("mallory resuming alice's detached session: %v", o)
	}
	if o := attach("fe-1", "alice", false, false); o.Result != inboxpb.Result_RESULT_OK || !o.Attach.SessionPresent {
		t.Fatalf("alice resuming: %v", o)
	}
	if o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{Tenant: "acme", Inbox: "shared-id",
		Incarnation: inc, Owner: "fe-1", NowUnixMs: time.Now().UnixMilli()}}}); o.Result != inboxpb.Result_RESULT_OK {
		t.Fatalf("detach: %v", o)
	}
	o := attach("fe-2", "mallory", false, true)
	if o.Result != inboxpb.Result_RESULT_OK || o.Attach.SessionPresent || o.Attach.Meta.User != "mallory" || o.Attach.Discarded.GetIncarnation() != inc {
		t.Fatalf("mallory replacing alice's detached session: %v", o)
	}
	if f := e.fetch("acme", "shared-id", o.Attach.Meta.Incarnation, 0); len(f.Qos12) != 0 {
		t.Fatalf("the fresh session holds alice's messages: %s", payloads(f.Qos12))
	}
}

// TestInsertDedupe: an inbox takes a message with a given dedupe once
// within inbox.DedupeWindow of its stamp (the same message routed twice,
// through two frontends), each inbox for itself; after the window the
// record is swept.
func TestInsertDedupe(t *testing.T) {
	e := start(t)
	a := e.attach("acme", "dd-1", false, 3600, nil, nil)
	e.attach("acme", "dd-2", false, 3600, nil, nil)
	now := time.Now().UnixMilli()
	dedupe := func(stamp int64, n byte) []byte {
		d := binary.BigEndian.AppendUint64(nil, uint64(stamp))
		return append(d, bytes.Repeat([]byte{n}, 16)...)
	}
	insert := func(ib string, d ...[]byte) []inboxpb.InsertResult {
		t.Helper()
		var items []*inboxpb.InsertItem
		for _, x := range d {
			items = append(items, &inboxpb.InsertItem{Tenant: "acme", Inbox: ib, Dedupe: x, Message: &inboxpb.Message{Topic: "t", Payload: x[8:9], Qos: 2}})
		}
		r, err := e.inbox.Insert(e.ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		return r.Results
	}
	ok, dup := inboxpb.InsertResult_INSERT_OK, inboxpb.InsertResult_INSERT_DUPLICATE
	if r := insert("dd-1", dedupe(now, 1), dedupe(now, 1), dedupe(now, 2)); !slices.Equal(r, []inboxpb.InsertResult{ok, dup, ok}) {
		t.Fatalf("first batch: %v", r)
	}
	if r := insert("dd-1", dedupe(now, 1), dedupe(now, 2)); !slices.Equal(r, []inboxpb.InsertResult{dup, dup}) {
		t.Fatalf("the same messages again: %v", r)
	}
	if r := insert("dd-2", dedupe(now, 1)); !slices.Equal(r, []inboxpb.InsertResult{ok}) {
		t.Fatalf("another inbox: %v", r)
	}
	if f := e.fetch("acme", "dd-1", a.Meta.Incarnation, 0); len(f.Qos12) != 2 {
		t.Fatalf("dd-1 holds %d messages, want 2", len(f.Qos12))
	}
	// A message stamped past the window sweeps the older records.
	later := now + inbox.DedupeWindow.Milliseconds() + 1
	if r := insert("dd-1", dedupe(later, 3), dedupe(now, 1)); !slices.Equal(r, []inboxpb.InsertResult{ok, ok}) {
		t.Fatalf("after the window: %v", r)
	}
	if _, err := e.inbox.Insert(e.ctx, []*inboxpb.InsertItem{{Tenant: "acme", Inbox: "dd-1", Dedupe: []byte("short"), Message: &inboxpb.Message{Topic: "t"}}}); err == nil {
		t.Fatal("a dedupe of 5 bytes was taken")
	}
}

// TestRelKeys: each packet ID a commit adds to awaiting_rel gets the next
// rel_seq and the commit's stamp; a removed ID's key goes, an ID added again
// gets a new one, a key is marked routed, and a detach keeps the keys of
// the IDs it keeps.
func TestRelKeys(t *testing.T) {
	e := start(t)
	a := e.attach("acme", "rk", false, 3600, nil, nil)
	inc := a.Meta.Incarnation
	var routed []uint32
	commit := func(now int64, add, remove []uint32) *inboxpb.Meta {
		t.Helper()
		o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Commit{Commit: &inboxpb.CommitRequest{Tenant: "acme", Inbox: "rk",
			Incarnation: inc, Owner: "fe-1", RelAdd: add, RelRemove: remove, RelRouted: routed, NowUnixMs: now}}})
		if o.Result != inboxpb.Result_RESULT_OK {
			t.Fatalf("commit: %v", o)
		}
		return o.Meta
	}
	keys := func(m *inboxpb.Meta) string {
		s := ""
		for _, k := range m.RelKeys {
			s += fmt.Sprintf("%d:%d@%d", k.PacketId, k.Seq, k.StampUnixMs)
			if k.Routed {
				s += "r"
			}
			s += " "
		}
		return s
	}
	if m := commit(100, []uint32{7, 9}, nil); keys(m) != "7:1@100 9:2@100 " {
		t.Fatalf("after adding 7 and 9: %s", keys(m))
	}
	if m := commit(200, []uint32{7}, nil); keys(m) != "7:1@100 9:2@100 " {
		t.Fatalf("adding 7 again changed its key: %s", keys(m))
	}
	routed = []uint32{9}
	if m := commit(300, []uint32{7}, []uint32{7}); keys(m) != "9:2@100r 7:3@300 " {
		t.Fatalf("7 released and reused, 9 routed: %s", keys(m))
	}
	o := e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{Tenant: "acme", Inbox: "rk",
		Incarnation: inc, Owner: "fe-1", NowUnixMs: time.Now().UnixMilli(), AwaitingRel: []uint32{7}}}})
	if o.Result != inboxpb.Result_RESULT_OK || keys(o.Meta) != "7:3@300 " {
		t.Fatalf("detach keeping 7: %v %s", o.Result, keys(o.Meta))
	}
}

// TestFetchBoundedByBytes: a fetch with max_bytes stops once the messages
// it returns reach the bound (QoS 0 and QoS 1/2 counted together, the one
// that reaches it included), so a frontend with little room left in its
// connection's byte budget is not sent a thousand large messages; the
// first message comes whatever its size.
func TestFetchBoundedByBytes(t *testing.T) {
	e := start(t)
	inc := e.attach("acme", "bytes", false, 3600, nil, nil).Meta.Incarnation
	big := string(make([]byte, 100))
	e.insert("acme", "bytes", 1, big, big, big, big, big)
	fetch := func(maxBytes uint64) *inboxpb.FetchResponse {
		t.Helper()
		r, err := e.inbox.Query(e.ctx, &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Fetch{Fetch: &inboxpb.FetchRequest{
			Tenant: "acme", Inbox: "bytes", Incarnation: inc, MaxBytes: maxBytes}}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Fetch
	}
	for _, c := range []struct {
		maxBytes  uint64
		qos0, q12 int
	}{
		{0, 0, 5},   // no bound
		{1, 0, 1},   // the first whatever its size
		{250, 0, 3}, // 2 × ~105 bytes are under 250, the third reaches it
		{10000, 0, 5},
	} {
		if f := fetch(c.maxBytes); len(f.Qos0) != c.qos0 || len(f.Qos12) != c.q12 {
			t.Fatalf("max_bytes %d: %d QoS 0 and %d QoS 1/2 messages, want %d and %d", c.maxBytes, len(f.Qos0), len(f.Qos12), c.qos0, c.q12)
		}
	}
	// The QoS 0 queue is read first and counts towards the same bound.
	e.insert("acme", "bytes", 0, big, big)
	if f := fetch(150); len(f.Qos0) != 2 || len(f.Qos12) != 0 {
		t.Fatalf("max_bytes 150: %d QoS 0 and %d QoS 1/2 messages, want 2 and 0", len(f.Qos0), len(f.Qos12))
	}
	if f := fetch(300); len(f.Qos0) != 2 || len(f.Qos12) != 1 {
		t.Fatalf("max_bytes 300: %d QoS 0 and %d QoS 1/2 messages, want 2 and 1", len(f.Qos0), len(f.Qos12))
	}
}

// TestListSessions: List pages through one tenant's persistent sessions by
// ID prefix, in ID order, across ranges, skipping queued messages, other
// tenants (one whose name extends this one's too) and clean sessions'
// will records.
func TestListSessions(t *testing.T) {
	e := start(t)
	for _, id := range []string{"l-c", "l-a", "l-b0", "l-b", "m-1"} {
		e.attach("acme", id, false, 3600, nil, nil)
	}
	e.insert("acme", "l-b", 1, "q1", "q2", "q3")
	e.attach("acmeZ", "l-z", false, 3600, nil, nil)
	e.attach("acm", "l-y", false, 3600, nil, nil)
	e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{Tenant: "acme", Inbox: "l-t", Owner: "fe-1",
		Transient: true, Will: &inboxpb.Will{Topic: "w"}, NowUnixMs: time.Now().UnixMilli()}}})
	list := func(prefix, after string, limit int) ([]string, string) {
		t.Helper()
		metas, next, err := e.inbox.List(e.ctx, "acme", prefix, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range metas {
			ids = append(ids, m.Inbox)
		}
		return ids, next
	}
	check := func(what string, got []string, next string, want []string, wantNext string) {
		t.Helper()
		if !slices.Equal(got, want) || next != wantNext {
			t.Errorf("%s: %v next %q, want %v next %q", what, got, next, want, wantNext)
		}
	}
	ids, next := list("l-", "", 0)
	check("all of l-", ids, next, []string{"l-a", "l-b", "l-b0", "l-c"}, "")
	ids, next = list("", "", 0)
	check("the tenant", ids, next, []string{"l-a", "l-b", "l-b0", "l-c", "m-1"}, "")
	ids, next = list("l-", "", 2)
	check("page 1", ids, next, []string{"l-a", "l-b"}, "l-b")
	ids, next = list("l-", next, 2)
	check("page 2", ids, next, []string{"l-b0", "l-c"}, "")

	// Split between l-b and l-b0: a page goes on in the next range.
	if _, err := e.c.Client(0).Admin.Split(e.ctx, &rangespb.SplitRequest{Keyspace: "inbox", Key: inbox.SplitKey("acme", "l-b0")}); err != nil {
		t.Fatal(err)
	}
	ids, next = list("l-", "l-a", 2)
	check("across the split", ids, next, []string{"l-b", "l-b0"}, "l-b0")
	ids, next = list("", "l-b", 10)
	check("from the split on", ids, next, []string{"l-b0", "l-c", "m-1"}, "")
	if _, _, err := e.inbox.List(e.ctx, "", "", "", 10); !errors.Is(err, ranges.ErrBadRequest) {
		t.Errorf("an empty tenant: %v", err)
	}
}

// TestDetachedOnlySubscribe: an operator's subscribe or unsubscribe
// (detached_only) is refused while a connection owns the session and
// applies once it detached; a connection's own is never refused.
func TestDetachedOnlySubscribe(t *testing.T) {
	e := start(t)
	a := e.attach("acme", "op-1", false, 3600, nil, nil)
	sub := func(filter string, detachedOnly bool) inboxpb.Result {
		return e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Subscribe{Subscribe: &inboxpb.SubscribeRequest{Tenant: "acme", Inbox: "op-1",
			Incarnation: a.Meta.Incarnation, Filter: filter, Options: &inboxpb.SubOptions{Qos: 1}, DetachedOnly: detachedOnly}}}).Result
	}
	unsub := func(filter string) inboxpb.Result {
		return e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Unsubscribe{Unsubscribe: &inboxpb.UnsubscribeRequest{Tenant: "acme", Inbox: "op-1",
			Incarnation: a.Meta.Incarnation, Filter: filter, DetachedOnly: true}}}).Result
	}
	if r := sub("a/+", true); r != inboxpb.Result_RESULT_CONFLICT {
		t.Fatalf("operator's subscribe to an attached session: %v", r)
	}
	if r := sub("own/+", false); r != inboxpb.Result_RESULT_OK {
		t.Fatalf("the connection's own subscribe: %v", r)
	}
	if r := unsub("own/+"); r != inboxpb.Result_RESULT_CONFLICT {
		t.Fatalf("operator's unsubscribe of an attached session: %v", r)
	}
	e.mutate(&inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{Tenant: "acme", Inbox: "op-1",
		Incarnation: a.Meta.Incarnation, Owner: "fe-1", NowUnixMs: time.Now().UnixMilli()}}})
	if r := sub("a/+", true); r != inboxpb.Result_RESULT_OK {
		t.Fatalf("operator's subscribe to a detached session: %v", r)
	}
	if r := unsub("own/+"); r != inboxpb.Result_RESULT_OK {
		t.Fatalf("operator's unsubscribe of a detached session: %v", r)
	}
	metas, err := e.inbox.GetMany(e.ctx, []*inboxpb.GetRequest{{Tenant: "acme", Inbox: "op-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if subs := metas[0].GetSubscriptions(); len(subs) != 1 || subs["a/+"] == nil {
		t.Fatalf("subscriptions %v, want a/+ only", subs)
	}
}
