package mqtt

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/mqtt/fanout"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
	"github.com/bifrost-mq/bifrost/ranges"
)

// inboxIDs is how many packet IDs (1..inboxIDs) the messages of a
// persistent session's inbox use: a message's ID is a function of its
// queue sequence number, so that a resend after a reconnect, on any
// frontend, carries the ID the client saw (MQTT-4.3.3: the client's QoS 2
// state is keyed by it). Other messages (retained ones sent at SUBSCRIBE)
// take IDs above.
const inboxIDs = 32768

func seqPacketID(seq uint64) uint16 { return uint16(seq%inboxIDs) + 1 }

// fetchBatch bounds one fetch of the QoS 0 queue.
const fetchBatch = 256

// session is the live side of a persistent session: the connection that
// owns the inbox, and a goroutine (run) that fetches from the inbox after
// the last sequence number it fetched, hands the messages to the
// connection, and commits what the client acknowledged. The inbox is the
// session's only durable state: subscriptions, queues, the PUBREC'd
// messages, the client's unreleased QoS 2 packet IDs.
type session struct {
	c     *conn
	inbox string
	inc   uint64
	owner string

	wake     chan struct{}
	stop     chan struct{}
	loopDone chan struct{}

	mu   sync.Mutex
	subs map[string]*inboxpb.SubOptions // by route subscription (dist.Subscription.String())
	// Acknowledgements to commit.
	done          []uint64
	released      []uint64
	qos0Upto      uint64
	qos0Committed uint64
	// committing is closed when the commit in flight is done; nil: none.
	committing chan struct{}
	// lost: a commit found the session owned by another connection.
	lost atomic.Bool
	// notified: this frontend was told of new messages since the last
	// fetch.
	notified atomic.Bool
	// offers are messages inserts on this frontend put in the inbox,
	// delivered without a fetch when next in their queue (guarded by mu).
	offers        []offered
	offerBytes    int
	offersDropped bool
	// behind (loop only): the inbox may hold messages after the cursors
	// that no offer or notification will announce (the window was full, a
	// fetch was cut short): the loop fetches on its next turn.
	behind bool
	// relSeqs are the messages whose PUBREC came back before this
	// connection: a PUBREL, not the PUBLISH, is resent (MQTT-4.4.0-1).
	relSeqs map[uint64]bool
	// The changes of the client's unreleased QoS 2 packet IDs being
	// written (qos2.go); relIdle is closed when none is left (nil: none).
	relMu    sync.Mutex
	relQueue []relChange
	relIdle  chan struct{}
	// relDurable is the IDs the inbox record has (with their keys; nil
	// for one without), redispatch the IDs with keys the record had at
	// attach whose resend has not come yet (qos2.go).
	relDurable map[uint16]*inboxpb.RelKey
	redispatch map[uint16]*inboxpb.RelKey
	// routeQueue is the QoS 2 messages waiting to be routed in order.
	routeQueue []func()
	routing    bool
	// Loop state.
	next0, next12 uint64
	dupBelow      uint64
	sentUpto      uint64
}

func newNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// openSession decides, at CONNECT, whether the connection has a persistent
// session, and attaches it: creating it or resuming it (session present),
// discarding it on a clean start (MQTT-3.1.2-4, MQTT-3.1.2-6), and taking it
// over from a connection that holds it on any frontend. It returns session
// present.
func (c *conn) openSession(p *packet.Connect, ack *packet.Connack) (bool, error) {
	v5 := c.version == packet.V5
	ib := c.s.cfg.Inbox
	if ib == nil {
		if v5 && p.Properties.SessionExpiryInterval > 0 {
			// Sessions do not outlive connections on this frontend.
			ack.Properties.SessionExpiryInterval, ack.Properties.HasSessionExpiryInterval = 0, true
		}
		return false, nil
	}
	expiry := p.Properties.SessionExpiryInterval
	if !v5 {
		expiry = 0
		if !p.CleanStart {
			expiry = math.MaxUint32 // a 3.x session never expires (MQTT-3.1.2-4)
		}
	}
	if max := c.maxSessionExpiry(); max > 0 && expiry > max {
		expiry = max
		if v5 {
			// The server's choice is announced (MQTT-3.2.2-... session expiry interval).
			ack.Properties.SessionExpiryInterval, ack.Properties.HasSessionExpiryInterval = max, true
		}
	}
	c.connectExpiry = expiry
	tenant, clientID := c.id.Tenant, c.key.clientID
	// A connection of the client on this frontend ends (and detaches its
	// session) first: MQTT-3.1.4-3.
	c.s.mu.Lock()
	old := c.s.sessions[c.key]
	c.s.mu.Unlock()
	if old != nil {
		old.kick(packet.SessionTakenOver)
		select {
		case <-old.done:
		case <-time.After(2 * c.s.cfg.RequestTimeout):
		}
	}
	ctx, cancel := context.WithTimeout(c.s.ctx, 2*c.s.cfg.RequestTimeout)
	defer cancel()
	var found *inboxpb.Meta
	looked := false
	if expiry == 0 && p.Will == nil {
		// The common case, a clean connection without a will: only a
		// session the client left behind must go (no owner, no write).
		var err error
		if found, err = c.s.lookupSession(ctx, tenant, clientID); err != nil {
			return false, err
		}
		if found == nil || found.Transient {
			return false, nil
		}
		looked = true
	}
	owner := c.s.cfg.ReceiverID + "|" + newNonce()
	// Known as a live owner before the inbox names it one, until detached.
	c.s.owners.add(owner)
	defer func() {
		if c.sess == nil && c.willRec == nil {
			c.s.owners.remove(owner)
		}
	}()
	if expiry == 0 && p.Will != nil && p.CleanStart {
		// A clean session with a will: the will goes into the inbox, so
		// that it is published even if this frontend dies (the attach
		// discards any session the client had).
		return false, c.holdWill(ctx, p, owner)
	}
	if expiry == 0 {
		// Transient unless a session exists and the client asked to resume it.
		if !looked {
			var err error
			if found, err = c.s.lookupSession(ctx, tenant, clientID); err != nil {
				return false, err
			}
		}
		if found == nil || found.Transient {
			if p.Will != nil {
				return false, c.holdWill(ctx, p, owner)
			}
			return false, nil
		}
		if p.CleanStart {
			return false, c.discardSession(ctx, owner)
		}
	}
	a, err := c.attach(ctx, &inboxpb.AttachRequest{Tenant: tenant, Inbox: clientID, Owner: owner, CleanStart: p.CleanStart,
		ExpirySeconds: expiry, Will: willOf(p.Will, clientID), Limits: c.inboxLimits()})
	if err != nil {
		return false, err
	}
	c.s.kickDisplaced(ctx, tenant, clientID, owner, a)
	c.s.removeSessionRoutes(a.Discarded)
	meta := a.Meta
	if a.SessionPresent && a.PreviousOwner != "" {
		// Read again what the previous connection wrote as it ended.
		q, err := ib.Query(ctx, &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Get{Get: &inboxpb.GetRequest{Tenant: tenant, Inbox: clientID}}})
		if err != nil {
			return false, err
		}
		if q.Meta == nil || q.Meta.Owner != owner || q.Meta.Incarnation != meta.Incarnation {
			return false, errors.New("the session was taken over again while attaching")
		}
		meta = q.Meta
	}
	s := &session{c: c, inbox: clientID, inc: meta.Incarnation, owner: owner,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), loopDone: make(chan struct{}),
		subs: map[string]*inboxpb.SubOptions{}, relSeqs: map[uint64]bool{}, dupBelow: meta.DupBelow}
	c.subsMu.Lock()
	for f, o := range meta.Subscriptions {
		parsed, err := dist.ParseSubscription(f)
		if err != nil {
			continue
		}
		s.subs[f] = o
		c.addSub(f, parsed)
	}
	c.s.m.subscriptions.Add(float64(len(c.subs)))
	c.subsMu.Unlock()
	for _, seq := range meta.Released {
		s.relSeqs[seq] = true
	}
	s.relDurable, s.redispatch = map[uint16]*inboxpb.RelKey{}, map[uint16]*inboxpb.RelKey{}
	for _, id := range meta.AwaitingRel {
		c.awaitRel(uint16(id))
		s.relDurable[uint16(id)] = nil
	}
	for _, k := range meta.RelKeys {
		if _, ok := s.relDurable[uint16(k.PacketId)]; ok {
			s.relDurable[uint16(k.PacketId)] = k
			if !k.Routed {
				s.redispatch[uint16(k.PacketId)] = k
			}
		}
	}
	c.sess = s
	return a.SessionPresent, nil
}

// openSessionAside runs openSession on a goroutine of its own: the inbox
// calls need a deep stack, which the connection's reader goroutine would
// otherwise keep for the connection's life (measured: 4 KiB more per idle
// connection).
func (c *conn) openSessionAside(p *packet.Connect, ack *packet.Connack) (bool, error) {
	shallow := p.Will == nil && p.CleanStart && (c.version != packet.V5 || p.Properties.SessionExpiryInterval == 0)
	if c.s.cfg.Inbox == nil || shallow {
		// A clean connection without a will only looks the client ID up,
		// through the lookup batcher's goroutine: not deep.
		return c.openSession(p, ack)
	}
	type result struct {
		present bool
		err     error
	}
	ch := make(chan result, 1)
	go func() {
		present, err := c.openSession(p, ack)
		ch <- result{present, err}
	}()
	r := <-ch
	return r.present, r.err
}

// errForeignSession: the client ID's session belongs to another user.
var errForeignSession = errors.New("the session belongs to another user")

// attach runs an AttachRequest in the connection's user's name, retrying
// while the previous connection's will is being published.
func (c *conn) attach(ctx context.Context, req *inboxpb.AttachRequest) (*inboxpb.AttachResponse, error) {
	req.User, req.ReplaceForeign = c.id.Username, c.s.cfg.ReplaceForeignSessions
	for attempt := 0; ; attempt++ {
		req.NowUnixMs = time.Now().UnixMilli()
		o, err := c.s.cfg.Inbox.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: req}})
		if err != nil {
			return nil, err
		}
		if o.Result == inboxpb.Result_RESULT_OK && o.Attach != nil {
			return o.Attach, nil
		}
		if o.Result == inboxpb.Result_RESULT_FORBIDDEN {
			return nil, errForeignSession
		}
		if o.Result != inboxpb.Result_RESULT_CONFLICT || attempt == 50 {
			return nil, fmt.Errorf("inbox attach: %s %s", o.Result, o.Reason)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// willRecord is the inbox record of a clean session's will (holdWill).
type willRecord struct {
	owner string
	inc   uint64
}

// holdWill puts a clean session's will in the inbox (Meta.transient): the
// inbox scheduler publishes it if the connection ends without a DISCONNECT
// or its frontend dies, so that the will outlives this frontend. It
// discards a session the client had.
func (c *conn) holdWill(ctx context.Context, p *packet.Connect, owner string) error {
	tenant, clientID := c.id.Tenant, c.key.clientID
	a, err := c.attach(ctx, &inboxpb.AttachRequest{Tenant: tenant, Inbox: clientID, Owner: owner, CleanStart: true,
		Transient: true, Will: willOf(p.Will, clientID)})
	if err != nil {
		return err
	}
	c.s.kickDisplaced(ctx, tenant, clientID, owner, a)
	c.s.removeSessionRoutes(a.Discarded)
	c.willRec = &willRecord{owner: owner, inc: a.Meta.Incarnation}
	return nil
}

// endWill ends a clean session's will record as its connection ends: a
// DISCONNECT discards the will; otherwise it is due now and the inbox
// scheduler publishes it, once. If the record is gone (a newer connection
// of the client took it over) this frontend publishes the will itself; if
// the frontend closes before the inbox answers (detach), the scheduler
// finds the owner gone and publishes it then.
func (c *conn) endWill() {
	r := c.willRec
	defer c.s.owners.remove(r.owner)
	zero := uint32(0)
	send := c.willOnClose && c.will != nil
	o, ambiguous, err := c.s.detach(&inboxpb.DetachRequest{
		Tenant: c.id.Tenant, Inbox: c.key.clientID, Incarnation: r.inc, Owner: r.owner, NowUnixMs: time.Now().UnixMilli(),
		ExpirySeconds: &zero, SendWill: send})
	switch {
	case err != nil:
		c.s.log.Warn("ending a will record failed; the inbox scheduler publishes the will", "tenant", c.id.Tenant, "client", c.key.clientID, "err", err)
	case o.Result != inboxpb.Result_RESULT_OK && send && !ambiguous:
		c.publishWill()
	}
}

// detach runs a DetachRequest until it is answered, for as long as this
// frontend runs (its owner meanwhile counts as live): a detach given up
// leaves the session to the inbox scheduler's orphan check, which takes the
// connection for lost and publishes its will, even after a DISCONNECT
// (jepsen mqtt-will × kill-minority and × partition-ring: wills published
// 17 and 25 s after their clients' DISCONNECT while the inbox range had no
// leader). Tries are a second apart at most, so that the will of a
// connection lost during an outage goes out soon after it. A closing
// frontend tries once more. ambiguous says an earlier
// attempt failed, so it may have applied: then a CONFLICT or NO_INBOX
// answer may be that attempt's doing, not a takeover's.
func (s *Server) detach(req *inboxpb.DetachRequest) (o *inboxpb.Output, ambiguous bool, err error) {
	for wait := 200 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		o, err = s.cfg.Inbox.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: req}})
		cancel()
		if err == nil || errors.Is(err, ranges.ErrBadRequest) || s.bg.Err() != nil {
			return o, ambiguous, err
		}
		ambiguous = true
		s.log.Info("inbox detach failed; trying again", "tenant", req.Tenant, "client", req.Inbox, "err", err)
		select {
		case <-s.bg.Done():
		case <-time.After(wait):
		}
	}
}

// discardSession ends the client's existing session for a clean start
// without a persistent one: the connection holding it is closed, its routes
// removed, its inbox deleted.
func (c *conn) discardSession(ctx context.Context, owner string) error {
	tenant, clientID := c.id.Tenant, c.key.clientID
	a, err := c.attach(ctx, &inboxpb.AttachRequest{Tenant: tenant, Inbox: clientID, Owner: owner, CleanStart: true})
	if err != nil {
		return err
	}
	c.s.kickDisplaced(ctx, tenant, clientID, owner, a)
	c.s.removeSessionRoutes(a.Discarded)
	zero := uint32(0)
	_, err = c.s.cfg.Inbox.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{
		Tenant: tenant, Inbox: clientID, Incarnation: a.Meta.Incarnation, Owner: owner,
		NowUnixMs: time.Now().UnixMilli(), ExpirySeconds: &zero}}})
	return err
}

// start runs the delivery loop; after CONNACK.
func (s *session) start() {
	s.c.s.wg.Add(1)
	go func() {
		defer s.c.s.wg.Done()
		s.run()
	}()
}

func (s *session) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *session) run() {
	defer close(s.loopDone)
	poll := s.c.s.cfg.InboxPollInterval
	t := time.NewTicker(poll)
	defer t.Stop()
	// The first fetch of a connection is linearizable: it must see the
	// acknowledgements the previous connection committed.
	linearizable := true
	for {
		if s.lost.Load() {
			s.c.kick(packet.SessionTakenOver)
			return
		}
		s.commit()
		notified := s.notified.Swap(false)
		if s.deliverOffers() {
			s.behind = true
		}
		more := false
		if linearizable || notified || s.behind {
			var ok bool
			more, ok = s.fetch(linearizable, notified)
			if !ok {
				s.c.kick(packet.SessionTakenOver)
				return
			}
			linearizable = false
		}
		if more {
			select {
			case <-s.stop:
				return
			default:
				continue
			}
		}
		select {
		case <-s.stop:
			return
		case <-s.wake:
		case <-t.C:
			// The backstop for a lost notification reads the leader's
			// applied state, where a committed insert is: a linearizable
			// read per session and poll cost 1000 sessions 200 ReadIndex
			// rounds a second.
			s.behind = true
		}
	}
}

// maxOffers bounds the messages offered to a session between two turns of
// its loop; past it they are fetched.
const maxOffers = 1024

// offered is a message an insert on this frontend put in the session's
// inbox, with its sequence number.
type offered struct {
	seq uint64
	msg *inboxpb.Message
}

// offer hands the session a message just inserted into its inbox (the
// insert committed, naming this connection as the owner), so that its loop
// delivers it without a fetch when it is the next in its queue.
func (s *session) offer(seq uint64, m *inboxpb.Message) {
	s.mu.Lock()
	// Offers wait for the loop's next turn: bounded by the byte budget
	// too, for a loop that waits for a slow fetch.
	if len(s.offers) < maxOffers && s.offerBytes < s.c.s.cfg.MaxQueuedBytes {
		s.offers = append(s.offers, offered{seq: seq, msg: m})
		s.offerBytes += offeredSize(m)
	} else {
		s.offersDropped = true
	}
	s.mu.Unlock()
	s.wakeUp()
}

// deliverOffers delivers the offered messages that are next in their
// queues; true when some could not be (a gap before them, the window full,
// too many offered): those are left to a fetch. Loop only.
func (s *session) deliverOffers() (rest bool) {
	s.mu.Lock()
	offers, dropped := s.offers, s.offersDropped
	s.offers, s.offerBytes, s.offersDropped = nil, 0, false
	s.mu.Unlock()
	if len(offers) == 0 {
		return dropped
	}
	// Inserts of several lanes may report out of order.
	slices.SortFunc(offers, func(a, b offered) int {
		if a.msg.Qos == 0 && b.msg.Qos != 0 {
			return -1
		}
		if a.msg.Qos != 0 && b.msg.Qos == 0 {
			return 1
		}
		return cmp.Compare(a.seq, b.seq)
	})
	q0 := false
	for _, o := range offers {
		qm := &inboxpb.QueuedMessage{Seq: o.seq, Message: o.msg}
		if o.msg.Qos == 0 {
			switch {
			case o.seq < s.next0:
			case o.seq == s.next0 && s.deliver(qm, 0):
				s.next0++
				q0 = true
			default:
				rest = true
			}
			continue
		}
		switch {
		case o.seq < s.next12:
		case o.seq == s.next12 && !rest && s.windowFree() && s.deliver(qm, 1):
			s.next12++
		default:
			rest = true
		}
	}
	if q0 {
		s.mu.Lock()
		s.qos0Upto = s.next0
		s.mu.Unlock()
	}
	return rest || dropped
}

// windowFree says whether the connection may send one more QoS 1/2 message.
func (s *session) windowFree() bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.window-len(c.inflight) > 0
}

// commit hands the acknowledgements gathered since the last commit to the
// frontend's commit batcher (one Raft round for the commits of all its
// sessions) and returns at once; the returned channel is closed when that
// commit is done, nil if none was started. One commit of a session is in
// flight at a time: acknowledgements that come meanwhile go in the next.
// A connection that no longer owns the session is told by the result and
// closed.
func (s *session) commit() <-chan struct{} {
	s.mu.Lock()
	if s.committing != nil {
		s.mu.Unlock()
		return nil
	}
	done, rel, q0 := s.done, s.released, s.qos0Upto
	if len(done) == 0 && len(rel) == 0 && q0 <= s.qos0Committed {
		s.mu.Unlock()
		return nil
	}
	s.done, s.released = nil, nil
	ch := make(chan struct{})
	s.committing = ch
	s.mu.Unlock()
	req := &inboxpb.CommitRequest{Tenant: s.c.id.Tenant, Inbox: s.inbox, Incarnation: s.inc, Owner: s.owner,
		Qos0Upto: q0, Qos12Done: done, Qos12Released: rel}
	ctx, cancel := context.WithTimeout(context.Background(), s.c.s.cfg.RequestTimeout)
	s.c.s.commits.add(ctx, []*inboxpb.CommitRequest{req}, func(res []commitResult, err error) {
		cancel()
		var o *inboxpb.Output
		if err == nil {
			o, err = res[0].out, res[0].err
		}
		s.mu.Lock()
		s.committing = nil
		if err != nil {
			// Not committed: the messages are resent after a reconnect
			// (QoS 1 may repeat; a QoS 2 PUBLISH resent after its PUBREC
			// is answered by the client with PUBREC again, MQTT-4.3.3-9).
			// The next commit carries them again.
			s.done, s.released = append(s.done, done...), append(s.released, rel...)
		} else {
			s.qos0Committed = max(s.qos0Committed, q0)
		}
		more := len(s.done) > 0 || len(s.released) > 0 || s.qos0Upto > s.qos0Committed
		s.mu.Unlock()
		close(ch)
		// Applied (a former owner's acknowledgements apply too): the
		// client may now have its PUBRELs.
		if err == nil && len(rel) > 0 && (o.Result == inboxpb.Result_RESULT_OK || o.Result == inboxpb.Result_RESULT_CONFLICT) {
			s.c.releaseCommitted(rel)
		}
		switch {
		case err != nil:
			s.c.s.log.Warn("inbox commit failed", "tenant", s.c.id.Tenant, "client", s.inbox, "err", err)
		case o.Result == inboxpb.Result_RESULT_CONFLICT, o.Result == inboxpb.Result_RESULT_NO_INBOX:
			s.lost.Store(true)
			s.wakeUp()
		case more:
			s.wakeUp()
		}
	})
	return ch
}

// commitAll commits what is gathered and waits, for a session that stops.
func (s *session) commitAll() {
	deadline := time.After(2 * s.c.s.cfg.RequestTimeout)
	for {
		s.mu.Lock()
		inFlight := s.committing
		s.mu.Unlock()
		var ch <-chan struct{} = inFlight
		if inFlight == nil {
			if ch = s.commit(); ch == nil {
				return
			}
		}
		select {
		case <-ch:
		case <-deadline:
			return
		}
	}
}

// fetch gets the messages after the last fetched and hands them to the
// connection; more means a full batch came (fetch again); false means the
// session is no longer this connection's.
//
// Most fetches read the inbox range leader's applied state without a
// ReadIndex round (half the latency of a message's way through the inbox
// was that round). Such a read is never wrong about messages (the cursors
// only move forward, and the first fetch of a connection is linearizable),
// but it may be behind after a leader change: it is asked again
// linearizably when it shows another owner or no inbox (before concluding
// that the session is lost), or nothing although this session was just
// told of new messages (notified).
func (s *session) fetch(linearizable, notified bool) (more, ok bool) {
	c := s.c
	c.mu.Lock()
	free := c.window - len(c.inflight)
	// What the byte budget has room for (budget.go); none: the fetch only
	// looks at the owner, and the writer wakes the loop once there is.
	room := c.s.cfg.MaxQueuedBytes - c.heldLocked()
	if room <= 0 {
		c.waitRoomLocked(s.wakeUp)
	}
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return false, true
	}
	req := &inboxpb.FetchRequest{Tenant: c.id.Tenant, Inbox: s.inbox, Incarnation: s.inc,
		Qos0From: s.next0, Qos12From: s.next12, Max: uint32(max(free, 1)), MaxBytes: uint64(max(room, 1))}
	if free <= 0 {
		req.Qos12From, req.Max = math.MaxUint64, fetchBatch
	}
	if room <= 0 {
		req.Qos0From, req.Qos12From = math.MaxUint64, math.MaxUint64
		notified = false // nothing asked for, nothing to expect
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.s.cfg.RequestTimeout)
	defer cancel()
	var f *inboxpb.FetchResponse
	for {
		start := time.Now()
		var err error
		f, err = c.s.cfg.Inbox.Fetch(ctx, req, linearizable)
		op := "fetch_leader"
		if linearizable {
			op = "fetch"
		}
		c.s.m.inboxCalls.WithLabelValues(op).Observe(time.Since(start).Seconds())
		if err != nil {
			c.s.log.Warn("inbox fetch failed", "tenant", c.id.Tenant, "client", s.inbox, "err", err)
			return false, true
		}
		lost := f.GetResult() == inboxpb.Result_RESULT_NO_INBOX || f.GetOwner() != s.owner
		if linearizable || !(lost || (notified && len(f.Qos0) == 0 && len(f.Qos12) == 0)) {
			break
		}
		linearizable = true
	}
	if f.GetResult() == inboxpb.Result_RESULT_NO_INBOX || f.GetOwner() != s.owner {
		return false, false // taken over, discarded or expired
	}
	// fetched is the stored size of what came, against max_bytes.
	var fetched uint64
	stopped := false
	for _, qm := range f.Qos0 {
		fetched += uint64(proto.Size(qm.Message))
		if stopped = !s.deliver(qm, 0); stopped {
			break // no room: fetched again once there is
		}
		s.next0 = qm.Seq + 1
	}
	s.mu.Lock()
	s.qos0Upto = max(s.qos0Upto, s.next0)
	s.mu.Unlock()
	for _, qm := range f.Qos12 {
		fetched += uint64(proto.Size(qm.Message))
		if stopped || !s.deliver(qm, 1) {
			// The window is full, the budget has no room, or its packet
			// ID is still held by a message 32768 back: wait for an
			// acknowledgement or for room.
			s.behind = true
			return false, true
		}
		s.next12 = qm.Seq + 1
	}
	if stopped {
		s.behind = true
		return false, true
	}
	more = (len(f.Qos0) >= int(req.Max)) || (free > 0 && len(f.Qos12) >= free)
	// Cut short by the budget: more only if the writer made room since.
	cut := room > 0 && fetched >= req.MaxBytes
	if more || cut {
		more = s.room()
	}
	// A full window leaves QoS 1/2 messages in the inbox (not asked for),
	// as does a full budget.
	s.behind = more || cut || free <= 0 || room <= 0
	return more, true
}

// deliver hands one queued message to the connection with its
// subscription's options, or acknowledges it at once when it is not to be
// sent. false: not now (its packet ID is in use), fetch it again later.
func (s *session) deliver(qm *inboxpb.QueuedMessage, queue int) bool {
	c := s.c
	m := fromInbox(qm.Message)
	s.mu.Lock()
	opts, subscribed := s.subs[qm.Message.Subscription]
	released := queue == 1 && s.relSeqs[qm.Seq]
	s.mu.Unlock()
	// A message whose PUBREC came back is the client's already: its
	// exchange is finished (PUBREL) whatever happened to the subscription.
	skip := !released && (!subscribed || // unsubscribed since (MQTT-3.10.4-2)
		(opts.GetNoLocal() && m.Publisher == c.key.clientID) || // MQTT-3.8.3-3
		(m.ExpiresUnixMs != 0 && time.Now().UnixMilli() >= m.ExpiresUnixMs)) // MQTT-3.3.2-5
	qos := min(byte(m.Qos), byte(opts.GetQos()))
	if released {
		qos = 2
	}
	var ids []uint32
	if id := opts.GetSubscriptionId(); id != 0 {
		ids = []uint32{id}
	}
	retain := m.Retain && opts.GetRetainAsPublished()
	if queue == 0 || qos == 0 || skip {
		if !skip && !s.sendQoS0(m, retain, ids) {
			return false // no room in the budget: it stays in the inbox
		}
		if queue == 1 {
			s.acked(qm.Seq)
		}
		return true
	}
	om := &outMessage{m: m, qos: qos, retain: retain, subIDs: ids, inbox: true, seq: qm.Seq, released: released}
	id := seqPacketID(qm.Seq)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.inflight == nil {
		return true
	}
	if _, used := c.inflight[id]; used {
		return false
	}
	if len(c.inflight) >= c.window {
		// The window filled since the fetch measured it (retained
		// messages sent at SUBSCRIBE, say): Receive Maximum holds
		// (MQTT-3.3.4-9); the rest waits for an acknowledgement.
		return false
	}
	if released {
		c.inflight[id] = om
		c.enqueueLocked(&packet.Pubrel{PacketID: id}) // MQTT-4.4.0-1
		return true
	}
	if !c.roomLocked() {
		// The connection holds its byte budget (budget.go): the message
		// stays in the inbox until the client reads.
		c.waitRoomLocked(s.wakeUp)
		return false
	}
	if !c.sendPublishLocked(om, id, qm.Seq < s.dupBelow) { // DUP on a resend: MQTT-3.3.1-1
		s.acked(qm.Seq) // too large for the client: dropped
		return true
	}
	c.inflight[id] = om
	s.mu.Lock()
	s.sentUpto = max(s.sentUpto, qm.Seq+1)
	s.mu.Unlock()
	return true
}

// sendQoS0 sends a message from the inbox at QoS 0 unless the connection
// holds its byte budget: then false, and the loop is woken once it has
// room (the message stays in the inbox). A closed connection takes it.
func (s *session) sendQoS0(m *mqttpb.Message, retain bool, ids []uint32) bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.inflight == nil {
		return true
	}
	if !c.roomLocked() {
		c.waitRoomLocked(s.wakeUp)
		return false
	}
	c.sendPublishLocked(&outMessage{m: m, retain: retain, subIDs: ids}, 0, false)
	return true
}

// acked records a QoS 1/2 message the client is done with (PUBACK,
// PUBCOMP, or an error PUBREC).
func (s *session) acked(seq uint64) {
	s.mu.Lock()
	s.done = append(s.done, seq)
	s.done = commitPast(s.done, seq) // bug zoo (mqtt/bugzoo): unchanged in a normal build
	delete(s.relSeqs, seq)
	s.mu.Unlock()
	s.wakeUp()
}

// pubrec records a QoS 2 message whose PUBREC came back.
func (s *session) pubrec(seq uint64) {
	s.mu.Lock()
	s.released = append(s.released, seq)
	s.relSeqs[seq] = true
	s.mu.Unlock()
	s.wakeUp()
}

// close stops the delivery loop (after a last commit) and detaches the
// session from the connection; the inbox keeps it for its expiry and
// schedules the will if sendWill (the inbox leader's scheduler publishes it
// after its delay, now if none). It returns true when the will is this
// frontend's to publish: the session was taken over or is gone, so the
// inbox did not take it.
func (s *session) close(sendWill bool, expiry *uint32) (publishHere bool) {
	close(s.stop)
	<-s.loopDone
	s.commitAll()
	s.waitRels(2 * s.c.s.cfg.RequestTimeout)
	c := s.c
	rel := s.durableRel()
	slices.Sort(rel)
	s.mu.Lock()
	sent := s.sentUpto
	s.mu.Unlock()
	o, ambiguous, err := c.s.detach(&inboxpb.DetachRequest{
		Tenant: c.id.Tenant, Inbox: s.inbox, Incarnation: s.inc, Owner: s.owner, NowUnixMs: time.Now().UnixMilli(),
		ExpirySeconds: expiry, SendWill: sendWill, AwaitingRel: rel, SentUpto: sent})
	// From now on the inbox scheduler may detach it for us (if this detach
	// failed), sending the will.
	c.s.owners.remove(s.owner)
	if err != nil {
		// The scheduler finds the owner gone and detaches the session
		// itself, the will included.
		c.s.log.Warn("inbox detach failed", "tenant", c.id.Tenant, "client", s.inbox, "err", err)
		return false
	}
	if o.Result == inboxpb.Result_RESULT_OK && o.Meta == nil {
		// The session ended with its connection (expiry 0): its routes go.
		s.mu.Lock()
		m := &inboxpb.Meta{Tenant: c.id.Tenant, Inbox: s.inbox, Incarnation: s.inc, Subscriptions: s.subs}
		s.mu.Unlock()
		c.s.removeSessionRoutes(m)
	}
	return sendWill && o.Result != inboxpb.Result_RESULT_OK && !ambiguous
}

// subscribe adds a subscription to the session: recorded in the inbox,
// then routed in dist to the inbox (not to this frontend), then announced
// to the other frontends' match caches; the SUBACK follows.
func (s *session) subscribe(sub dist.Subscription, o fanout.Options) (distpb.Result, error) {
	c := s.c
	key := sub.String()
	opts := &inboxpb.SubOptions{Qos: uint32(o.QoS), NoLocal: o.NoLocal, RetainAsPublished: o.RetainAsPublished, SubscriptionId: o.SubscriptionID}
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.RequestTimeout)
	defer cancel()
	out, err := c.s.cfg.Inbox.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Subscribe{Subscribe: &inboxpb.SubscribeRequest{
		Tenant: c.id.Tenant, Inbox: s.inbox, Incarnation: s.inc, Filter: key, Options: opts}}})
	if err == nil && out.Result != inboxpb.Result_RESULT_OK {
		err = fmt.Errorf("inbox refused the subscription: %s %s", out.Result, out.Reason)
	}
	if err != nil {
		return distpb.Result_RESULT_OK, err
	}
	s.mu.Lock()
	_, had := s.subs[key]
	s.subs[key] = opts
	s.mu.Unlock()
	if had {
		return distpb.Result_RESULT_OK, nil // the route exists; the options changed
	}
	dout, err := c.s.cfg.Dist.AddRoute(ctx, &distpb.AddRouteRequest{Route: &distpb.Route{Tenant: c.id.Tenant, Subscription: key,
		Receiver: &distpb.Receiver{Kind: receiverInbox, Id: inbox.ReceiverID(s.inbox, s.inc)}}, MaxRoutesPerTenant: c.set.MaxRoutes})
	if err == nil && dout.Result != distpb.Result_RESULT_OK && dout.Result != distpb.Result_RESULT_EXISTS {
		err = fmt.Errorf("dist refused the route: %s %s", dout.Result, dout.Reason)
	}
	if err != nil {
		c.s.m.routeChanges.WithLabelValues("add", "error").Inc()
		s.mu.Lock()
		delete(s.subs, key)
		s.mu.Unlock()
		s.unrecord(key)
		if dout != nil {
			return dout.Result, err
		}
		return distpb.Result_RESULT_OK, err
	}
	c.s.m.routeChanges.WithLabelValues("add", "ok").Inc()
	c.s.cache.invalidate(c.id.Tenant)
	c.s.broadcastInvalidate(ctx, c.id.Tenant)
	return distpb.Result_RESULT_OK, nil
}

// unsubscribe removes a subscription's route and its record; messages it
// already queued are dropped at delivery.
func (s *session) unsubscribe(sub dist.Subscription) {
	key := sub.String()
	s.mu.Lock()
	delete(s.subs, key)
	s.mu.Unlock()
	s.c.s.removeInboxRoute(s.c.s.ctx, s.c.id.Tenant, key, inbox.ReceiverID(s.inbox, s.inc))
	s.c.s.cache.invalidate(s.c.id.Tenant)
	s.unrecord(key)
}

func (s *session) unrecord(key string) {
	c := s.c
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.RequestTimeout)
	defer cancel()
	if _, err := c.s.cfg.Inbox.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Unsubscribe{Unsubscribe: &inboxpb.UnsubscribeRequest{
		Tenant: c.id.Tenant, Inbox: s.inbox, Incarnation: s.inc, Filter: key}}}); err != nil {
		c.s.log.Warn("removing a subscription from an inbox failed", "tenant", c.id.Tenant, "client", s.inbox, "filter", clipped(key), "err", err)
	}
}
