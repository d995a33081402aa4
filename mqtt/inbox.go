package mqtt

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// Inbox is what the frontend needs of the inbox coprocessor (persistent
// sessions); *inbox.Client is one.
type Inbox interface {
	Mutate(ctx context.Context, in *inboxpb.Input) (*inboxpb.Output, error)
	Insert(ctx context.Context, items []*inboxpb.InsertItem) (*inboxpb.InsertResponse, error)
	Query(ctx context.Context, q *inboxpb.QueryRequest) (*inboxpb.QueryResponse, error)
	CommitBatch(ctx context.Context, commits []*inboxpb.CommitRequest) ([]*inboxpb.Output, error)
	Fetch(ctx context.Context, f *inboxpb.FetchRequest, linearizable bool) (*inboxpb.FetchResponse, error)
	GetMany(ctx context.Context, gets []*inboxpb.GetRequest) ([]*inboxpb.Meta, error)
	List(ctx context.Context, tenant, prefix, after string, limit int) ([]*inboxpb.Meta, string, error)
}

// An inbox owner is the connection attached to a persistent session:
// "<this frontend's receiver ID>|<random nonce>". The receiver ID part tells
// every frontend where to send a Notify or a Kick for it.
func ownerFrontend(owner string) string {
	recv, _, _ := strings.Cut(owner, "|")
	return recv
}

// messageProps is a message's properties as the inbox and retain keep them
// (opaque bytes): a Message without topic, payload, QoS, retain or expiry.
func messageProps(m *mqttpb.Message) []byte {
	b, _ := proto.Marshal(&mqttpb.Message{
		HasPayloadFormat: m.HasPayloadFormat, PayloadFormat: m.PayloadFormat, ContentType: m.ContentType,
		ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData, UserProperties: m.UserProperties,
		Publisher: m.Publisher,
	})
	return b
}

// fromInbox turns a queued inbox message back into a message.
func fromInbox(im *inboxpb.Message) *mqttpb.Message {
	m := &mqttpb.Message{}
	_ = proto.Unmarshal(im.Properties, m)
	m.Topic, m.Payload, m.Qos, m.Retain, m.ExpiresUnixMs = im.Topic, im.Payload, im.Qos, im.Retain, im.ExpiresUnixMs
	if im.Publisher != "" {
		m.Publisher = im.Publisher
	}
	return m
}

// deliverInboxes inserts a message into the inboxes dist matched, in the
// background (batched with the inserts of concurrent publishes, one
// proposal per range), tells their owners to fetch, and removes routes
// whose inbox is gone. done gets how many inboxes took the message, once
// the insert is committed (or failed); it runs on the batcher's goroutine
// and must not block. Inserts of one caller are applied in the order of its
// calls.
func (s *Server) deliverInboxes(ctx context.Context, tenant string, m *mqttpb.Message, routes []*distpb.Matched, done func(int, error)) {
	if s.cfg.Inbox == nil {
		// Persistent sessions are off on this frontend.
		s.drop(tenant, "", m.Topic, "inbox_receiver", len(routes))
		done(0, nil)
		return
	}
	props := messageProps(m)
	items := make([]*inboxpb.InsertItem, len(routes))
	for i, r := range routes {
		ib, inc := inbox.ParseReceiverID(r.Receiver.GetId())
		items[i] = &inboxpb.InsertItem{Tenant: tenant, Inbox: ib, Incarnation: inc, Message: &inboxpb.Message{
			Topic: m.Topic, Payload: m.Payload, Qos: m.Qos, Retain: m.Retain, Properties: props,
			Publisher: m.Publisher, ExpiresUnixMs: m.ExpiresUnixMs, Subscription: r.Subscription,
		}, Dedupe: m.Dedupe}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.InsertTimeout)
	s.inserts[insertLane(tenant, m.Publisher)].add(ctx, items, func(res []insertResult, err error) {
		cancel()
		if err != nil {
			done(0, err)
			return
		}
		done(s.inserted(tenant, items, routes, res), nil)
	})
}

// inserted handles the results of an insert: it counts the inboxes that
// exist (took the message, or were full), wakes their owners and removes the routes of inboxes
// that are gone.
func (s *Server) inserted(tenant string, items []*inboxpb.InsertItem, routes []*distpb.Matched, res []insertResult) int {
	n := 0
	var notify map[string][]*mqttpb.SessionRef
	var gone []*distpb.Matched
	for i, r := range res {
		switch r.result {
		case inboxpb.InsertResult_INSERT_OK:
			n++
			if r.owner != "" && ownerFrontend(r.owner) == s.cfg.ReceiverID {
				// Ours: the message itself goes to the session, which
				// delivers it without fetching it when it is the next.
				if c := s.session(tenant, items[i].Inbox); c != nil && c.sess != nil && c.sess.owner == r.owner {
					c.sess.offer(r.seq, items[i].Message)
				}
			} else if r.owner != "" {
				if notify == nil {
					notify = map[string][]*mqttpb.SessionRef{}
				}
				fe := ownerFrontend(r.owner)
				notify[fe] = append(notify[fe], &mqttpb.SessionRef{Tenant: tenant, ClientId: items[i].Inbox, Owner: r.owner})
			}
		case inboxpb.InsertResult_INSERT_DUPLICATE:
			n++ // took it before: routed a second time (qos2.go)
			s.m.inboxDuplicates.Inc()
		case inboxpb.InsertResult_INSERT_DROPPED:
			n++ // a matching subscriber, whose full inbox dropped it
			s.m.dropped.WithLabelValues("inbox_full").Inc()
			s.quotaExceeded(tenant, "inbox-queue-length")
			s.inboxOverflowed(tenant, items[i].Inbox, items[i].Message.GetTopic())
		case inboxpb.InsertResult_INSERT_NO_INBOX:
			gone = append(gone, routes[i])
		}
	}
	for fe, refs := range notify {
		s.notify(fe, refs)
	}
	if len(gone) > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for _, r := range gone {
				s.removeInboxRoute(s.ctx, tenant, r.Subscription, r.Receiver.GetId())
			}
		}()
	}
	return n
}

// batcher coalesces the calls of concurrent callers into one: while one
// call of do is in flight, the next ones queue and go together in the
// following call (one proposal per range for all of them). Calls are
// served in the order they were made, so the items of one caller, made
// one after the other, apply in that order (a publisher's messages keep
// their order in every inbox while it has many in flight).
type batcher[I, R any] struct {
	// do serves a batch, a result per item (or an error for all).
	do func(ctx context.Context, items []I) ([]R, error)
	// max bounds the items of one call of do.
	max int
	// observe, if set, is told each call's duration and size.
	observe func(d time.Duration, items int)

	mu      sync.Mutex
	pending []*batchCall[I, R]
	running bool
	// wake tells a running goroutine that lingers idle of new work.
	wake chan struct{}
}

// batcherLinger is how long a batcher's goroutine waits idle for more work
// before it ends. A goroutine that ended took its grown stack with it: the
// next one grew a fresh stack through the router, Dragonboat and Pebble
// again (most of a standalone connect storm's stack copying).
const batcherLinger = 50 * time.Millisecond

type batchCall[I, R any] struct {
	ctx   context.Context
	items []I
	done  func([]R, error)
}

// add queues items; done is called once, from the batcher's goroutine,
// with their results (in order) or an error. It must not block.
func (b *batcher[I, R]) add(ctx context.Context, items []I, done func([]R, error)) {
	call := &batchCall[I, R]{ctx: ctx, items: items, done: done}
	b.mu.Lock()
	b.pending = append(b.pending, call)
	if !b.running {
		b.running = true
		if b.wake == nil {
			b.wake = make(chan struct{}, 1)
		}
		go b.run()
	} else {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	b.mu.Unlock()
}

func (b *batcher[I, R]) run() {
	var idle *time.Timer
	for {
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.mu.Unlock()
			if idle == nil {
				idle = time.NewTimer(batcherLinger)
			} else {
				idle.Reset(batcherLinger)
			}
		wait:
			for {
				select {
				case <-b.wake:
					b.mu.Lock()
					if len(b.pending) > 0 {
						idle.Stop()
						break wait
					}
					b.mu.Unlock() // a wake for work already done
				case <-idle.C:
					b.mu.Lock()
					break wait
				}
			}
		}
		var batch, expired []*batchCall[I, R]
		n := 0
		for len(b.pending) > 0 && (n == 0 || n+len(b.pending[0].items) <= b.max) {
			c := b.pending[0]
			b.pending[0] = nil
			b.pending = b.pending[1:]
			if c.ctx.Err() != nil {
				expired = append(expired, c)
				continue
			}
			batch = append(batch, c)
			n += len(c.items)
		}
		if len(batch) == 0 && len(expired) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		for _, c := range expired {
			c.done(nil, c.ctx.Err())
		}
		if len(batch) == 0 {
			continue
		}
		items := make([]I, 0, n)
		var deadline time.Time
		for _, c := range batch {
			items = append(items, c.items...)
			if d, ok := c.ctx.Deadline(); ok && d.After(deadline) {
				deadline = d
			}
		}
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if !deadline.IsZero() {
			ctx, cancel = context.WithDeadline(ctx, deadline)
		}
		start := time.Now()
		res, err := b.do(ctx, items)
		cancel()
		if b.observe != nil {
			b.observe(time.Since(start), len(items))
		}
		if err == nil && len(res) != len(items) {
			err = fmt.Errorf("mqtt: a batch of %d items got %d results", len(items), len(res))
		}
		off := 0
		for _, c := range batch {
			if err != nil {
				c.done(nil, err)
			} else {
				c.done(res[off:off+len(c.items):off+len(c.items)], nil)
			}
			off += len(c.items)
		}
	}
}

// insertLanes is how many inserts a frontend has in flight at once, each
// lane one batch at a time. A publisher's messages all take its lane, so
// they keep their order; lanes overlap their Raft rounds (the leader
// appends their proposals with one fsync).
const insertLanes = 4

func insertLane(tenant, publisher string) int {
	h := fnv.New32a()
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(publisher))
	return int(h.Sum32() % insertLanes)
}

// insertResult is one inserted message's result and the owner of its
// inbox (empty: none attached), to be told there is something to fetch.
type insertResult struct {
	result inboxpb.InsertResult
	owner  string
	seq    uint64
}

// newInsertBatcher batches inbox inserts (up to 4096 messages a call).
func newInsertBatcher(ib Inbox, m *metrics) *batcher[*inboxpb.InsertItem, insertResult] {
	return &batcher[*inboxpb.InsertItem, insertResult]{
		max: 4096,
		do: func(ctx context.Context, items []*inboxpb.InsertItem) ([]insertResult, error) {
			resp, err := ib.Insert(ctx, items)
			if err != nil {
				return nil, err
			}
			out := make([]insertResult, len(resp.Results))
			for i, r := range resp.Results {
				out[i].result = r
				if i < len(resp.Owners) {
					out[i].owner = resp.Owners[i]
				}
				if i < len(resp.Seqs) {
					out[i].seq = resp.Seqs[i]
				}
			}
			return out, nil
		},
		observe: func(d time.Duration, items int) {
			m.inboxCalls.WithLabelValues("insert").Observe(d.Seconds())
			m.insertBatch.Observe(float64(items))
		},
	}
}

// newCommitBatcher batches the commits of the sessions this frontend
// serves (up to 1024 a call).
func newCommitBatcher(ib Inbox, m *metrics) *batcher[*inboxpb.CommitRequest, commitResult] {
	return &batcher[*inboxpb.CommitRequest, commitResult]{
		max: 1024,
		do: func(ctx context.Context, items []*inboxpb.CommitRequest) ([]commitResult, error) {
			outs, err := ib.CommitBatch(ctx, items)
			if outs == nil {
				return nil, err
			}
			res := make([]commitResult, len(items))
			for i, o := range outs {
				res[i].out = o
				if o == nil {
					res[i].err = err
				}
			}
			return res, nil
		},
		observe: func(d time.Duration, _ int) {
			m.inboxCalls.WithLabelValues("commit").Observe(d.Seconds())
		},
	}
}

// newLookupBatcher batches the session lookups of clean CONNECTs: one
// linearizable read per inbox range for all the CONNECTs that arrive while
// one is in flight, done on the batcher's goroutine (whose stack has grown
// once), not on a fresh goroutine per CONNECT that grew its stack through
// the router, Dragonboat and Pebble every time (a fifth of the CPU of a
// connect storm went to stack copying).
func newLookupBatcher(ib Inbox, m *metrics) *batcher[*inboxpb.GetRequest, *inboxpb.Meta] {
	return &batcher[*inboxpb.GetRequest, *inboxpb.Meta]{
		max: 256,
		do:  ib.GetMany,
		observe: func(d time.Duration, _ int) {
			m.inboxCalls.WithLabelValues("lookup").Observe(d.Seconds())
		},
	}
}

// lookupSession is the inbox record of a client ID (nil: none), read
// linearizably through the lookup batcher.
func (s *Server) lookupSession(ctx context.Context, tenant, clientID string) (*inboxpb.Meta, error) {
	type result struct {
		meta *inboxpb.Meta
		err  error
	}
	ch := make(chan result, 1)
	s.lookups.add(ctx, []*inboxpb.GetRequest{{Tenant: tenant, Inbox: clientID}}, func(r []*inboxpb.Meta, err error) {
		if err != nil {
			ch <- result{err: err}
			return
		}
		ch <- result{meta: r[0]}
	})
	r := <-ch
	return r.meta, r.err
}

// commitResult is one session's commit: its output, or why it was not
// applied.
type commitResult struct {
	out *inboxpb.Output
	err error
}

// notify tells another frontend fe (a receiver ID) that the sessions'
// inboxes have messages (this frontend's own sessions get offers instead).
func (s *Server) notify(fe string, refs []*mqttpb.SessionRef) {
	addr, ok := receiverAddr(fe)
	if !ok {
		return
	}
	c, err := s.peers.client(addr)
	if err != nil {
		return // the owner polls its inbox
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
		defer cancel()
		if _, err := c.Notify(ctx, &mqttpb.NotifyRequest{Receiver: fe, Sessions: refs}); err != nil {
			s.log.Debug("inbox notification not delivered", "frontend", addr, "err", err)
		}
	}()
}

func (s *Server) wakeSessions(refs []*mqttpb.SessionRef) {
	for _, r := range refs {
		if c := s.session(r.Tenant, r.ClientId); c != nil && c.sess != nil && c.sess.owner == r.Owner {
			c.sess.notified.Store(true)
			c.sess.wakeUp()
		}
	}
}

// kickDisplaced tells the owners an attach displaced to close: the one it
// took the session from, and those before it that may never have been told
// (an attach whose answer was lost, its frontend cut off, displaced an
// owner it then could not tell). In parallel; it returns when all answered
// or ctx ended.
func (s *Server) kickDisplaced(ctx context.Context, tenant, clientID, self string, a *inboxpb.AttachResponse) {
	owners := a.GetMeta().GetDisplaced()
	if a.PreviousOwner != "" && !slices.Contains(owners, a.PreviousOwner) {
		owners = append(owners, a.PreviousOwner)
	}
	var wg sync.WaitGroup
	for _, o := range owners {
		if o == self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.kickOwner(ctx, tenant, clientID, o)
		}()
	}
	wg.Wait()
}

// kickOwner closes the connection owner (on this or another frontend) whose
// session a new connection took over, and waits until it ended and wrote
// its in-flight state to the inbox, or ctx ends. An owner that cannot be
// reached finds out by itself: its next commit or fetch names another owner.
func (s *Server) kickOwner(ctx context.Context, tenant, clientID, owner string) {
	fe := ownerFrontend(owner)
	if fe == s.cfg.ReceiverID {
		s.kickLocal(ctx, tenant, clientID, owner, packet.SessionTakenOver)
		return
	}
	addr, ok := kickAddr(fe) // bug zoo (mqtt/bugzoo): receiverAddr in a normal build
	if !ok {
		return
	}
	c, err := s.peers.reach(addr)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, min(s.cfg.RequestTimeout, 3*time.Second))
	defer cancel()
	// Wait for ready: a frontend that restarted is reconnected to within
	// the timeout, rather than failed at once while the connection backs off.
	if _, err := c.Kick(ctx, &mqttpb.KickRequest{Receiver: fe, ReasonCode: uint32(packet.SessionTakenOver),
		Session: &mqttpb.SessionRef{Tenant: tenant, ClientId: clientID, Owner: owner}}, grpc.WaitForReady(true)); err != nil {
		s.log.Info("telling the previous owner of a session to close failed", "tenant", tenant, "client", clientID, "owner", owner, "err", err)
	}
}

// kickLocal closes the connection of a client ID on this frontend with
// code: the one that is owner, or with no owner ("": an operator's kick)
// whichever holds the client ID; it waits until the connection ended or
// ctx ends.
func (s *Server) kickLocal(ctx context.Context, tenant, clientID, owner string, code packet.ReasonCode) bool {
	c := s.session(tenant, clientID)
	if c == nil || (owner != "" && (c.sess == nil || c.sess.owner != owner)) {
		return false
	}
	c.kick(code) // MQTT-3.1.4-3 for a takeover
	select {
	case <-c.done:
	case <-ctx.Done():
	}
	return true
}

// removeInboxRoute removes one route of an inbox receiver.
func (s *Server) removeInboxRoute(ctx context.Context, tenant, sub, receiver string) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	_, err := s.cfg.Dist.RemoveRoute(ctx, &distpb.RemoveRouteRequest{Route: &distpb.Route{
		Tenant: tenant, Subscription: sub, Receiver: &distpb.Receiver{Kind: receiverInbox, Id: receiver}}})
	if err != nil {
		s.m.routeChanges.WithLabelValues("remove", "error").Inc()
		s.log.Warn("removing an inbox route failed", "tenant", tenant, "subscription", sub, "receiver", receiver, "err", err)
		return
	}
	s.m.routeChanges.WithLabelValues("remove", "ok").Inc()
}

// removeSessionRoutes removes, in the background, the routes of a session
// that ended (discarded, or detached with no expiry).
func (s *Server) removeSessionRoutes(m *inboxpb.Meta) {
	if m == nil || len(m.Subscriptions) == 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		id := inbox.ReceiverID(m.Inbox, m.Incarnation)
		for f := range m.Subscriptions {
			s.removeInboxRoute(context.Background(), m.Tenant, f, id)
		}
	}()
}

// PublishWill publishes a persistent session's will when the inbox
// scheduler finds it due (its delay passed or the session ended without the
// client coming back): like any message, retained if flagged, to transient
// and persistent subscribers alike. It implements inbox.WillPublisher.
func (s *Server) PublishWill(ctx context.Context, tenant, clientID string, w *inboxpb.Will) error {
	if w == nil {
		return nil
	}
	m := &mqttpb.Message{}
	_ = proto.Unmarshal(w.Properties, m)
	// The stored expiry is the will's message expiry interval in ms.
	if m.ExpiresUnixMs != 0 {
		m.ExpiresUnixMs += time.Now().UnixMilli()
	}
	m.Topic, m.Payload, m.Qos, m.Retain, m.Publisher = w.Topic, w.Payload, w.Qos, w.Retain, clientID
	if m.Retain {
		if err := s.retain(ctx, tenant, m); err != nil {
			return err
		}
	}
	if _, err := s.dispatch(ctx, tenant, m); err != nil {
		return err
	}
	s.willPublished(tenant, clientID, m.Topic, byte(m.Qos))
	return nil
}

// willOf is the will as the inbox keeps it: the properties, with the message
// expiry interval (relative, in ms) in place of an absolute expiry.
func willOf(w *packet.Will, clientID string) *inboxpb.Will {
	if w == nil {
		return nil
	}
	m := messageOf(w.Topic, &packet.Publish{QoS: w.QoS, Retain: w.Retain, Properties: w.Properties}, clientID, time.UnixMilli(0))
	props, _ := proto.Marshal(&mqttpb.Message{
		HasPayloadFormat: m.HasPayloadFormat, PayloadFormat: m.PayloadFormat, ContentType: m.ContentType,
		ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData, UserProperties: m.UserProperties,
		Publisher: m.Publisher, ExpiresUnixMs: m.ExpiresUnixMs,
	})
	return &inboxpb.Will{Topic: w.Topic, Payload: w.Payload, Qos: uint32(w.QoS), Retain: w.Retain,
		DelaySeconds: w.Properties.WillDelayInterval, Properties: props}
}

func (f *frontendService) Notify(ctx context.Context, req *mqttpb.NotifyRequest) (*mqttpb.NotifyResponse, error) {
	if req.Receiver == f.s.cfg.ReceiverID {
		f.s.wakeSessions(req.Sessions)
	}
	return &mqttpb.NotifyResponse{}, nil
}

func (f *frontendService) Kick(ctx context.Context, req *mqttpb.KickRequest) (*mqttpb.KickResponse, error) {
	// A takeover names the receiver and the owner; an operator's kick
	// (Server.Kick) neither: any connection of the client ID goes.
	if req.Session == nil || (req.Receiver != f.s.cfg.ReceiverID && (req.Receiver != "" || req.Session.Owner != "")) {
		return &mqttpb.KickResponse{UnknownReceiver: true}, nil
	}
	code := packet.SessionTakenOver
	if req.ReasonCode != 0 {
		code = packet.ReasonCode(req.ReasonCode)
	}
	found := f.s.kickLocal(ctx, req.Session.Tenant, req.Session.ClientId, req.Session.Owner, code)
	return &mqttpb.KickResponse{Found: found}, nil
}

// ownerSet is the inbox owners this frontend's connections are, from
// before their attach to after their detach.
type ownerSet struct {
	mu sync.Mutex
	m  map[string]struct{}
}

func (o *ownerSet) add(owner string) {
	o.mu.Lock()
	if o.m == nil {
		o.m = map[string]struct{}{}
	}
	o.m[owner] = struct{}{}
	o.mu.Unlock()
}

func (o *ownerSet) remove(owner string) {
	o.mu.Lock()
	delete(o.m, owner)
	o.mu.Unlock()
}

func (o *ownerSet) has(owner string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.m[owner]
	return ok
}

// DeadOwners returns the inbox owners that are gone: a connection of this
// frontend that ended, of a frontend that answers it does not have it or
// is a later process at that address, or of a frontend that has been
// unreachable and absent from gossip for DeadFrontendAfter. It implements
// inbox.OwnerChecker for the inbox scheduler.
func (s *Server) DeadOwners(ctx context.Context, owners []string) []string {
	byFE := map[string][]string{}
	for _, o := range owners {
		fe := ownerFrontend(o)
		byFE[fe] = append(byFE[fe], o)
	}
	var dead []string
	for fe, os := range byFE {
		if fe == s.cfg.ReceiverID {
			for _, o := range os {
				if !s.owners.has(o) {
					dead = append(dead, o)
				}
			}
			continue
		}
		addr, ok := receiverAddr(fe)
		if !ok {
			dead = append(dead, os...)
			continue
		}
		gone := func() bool {
			return s.cfg.Frontends != nil && s.peers.gone(addr, s.cfg.Frontends(), s.cfg.DeadFrontendAfter)
		}
		c, err := s.peers.client(addr)
		if err != nil {
			if gone() {
				dead = append(dead, os...)
			}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		resp, err := c.Owners(cctx, &mqttpb.OwnersRequest{Receiver: fe, Owners: os})
		cancel()
		switch {
		case err != nil:
			s.peers.failed(addr)
			if gone() {
				dead = append(dead, os...)
			}
		case resp.UnknownReceiver:
			dead = append(dead, os...)
		default:
			dead = append(dead, resp.Gone...)
		}
	}
	return dead
}

func (f *frontendService) Owners(ctx context.Context, req *mqttpb.OwnersRequest) (*mqttpb.OwnersResponse, error) {
	if req.Receiver != f.s.cfg.ReceiverID {
		return &mqttpb.OwnersResponse{UnknownReceiver: true}, nil
	}
	resp := &mqttpb.OwnersResponse{}
	for _, o := range req.Owners {
		if !f.s.owners.has(o) {
			resp.Gone = append(resp.Gone, o)
		}
	}
	return resp, nil
}
