package mqtt

import (
	"context"
	"strings"
	"sync"
	"time"

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

// deliverInboxes inserts a message into the inboxes dist matched (one
// batched Insert, one proposal per range), tells their owners to fetch,
// and removes routes whose inbox is gone. It returns how many took it.
func (s *Server) deliverInboxes(ctx context.Context, tenant string, m *mqttpb.Message, routes []*distpb.Matched) (int, error) {
	if s.cfg.Inbox == nil {
		// Persistent sessions are off on this frontend.
		s.m.dropped.WithLabelValues("inbox_receiver").Add(float64(len(routes)))
		return 0, nil
	}
	props := messageProps(m)
	items := make([]*inboxpb.InsertItem, len(routes))
	for i, r := range routes {
		ib, inc := inbox.ParseReceiverID(r.Receiver.GetId())
		items[i] = &inboxpb.InsertItem{Tenant: tenant, Inbox: ib, Incarnation: inc, Message: &inboxpb.Message{
			Topic: m.Topic, Payload: m.Payload, Qos: m.Qos, Retain: m.Retain, Properties: props,
			Publisher: m.Publisher, ExpiresUnixMs: m.ExpiresUnixMs, Subscription: r.Subscription,
		}}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.inserts.insert(ctx, s.cfg.Inbox, items)
	if err != nil {
		return 0, err
	}
	n := 0
	notify := map[string][]*mqttpb.SessionRef{}
	var gone []*distpb.Matched
	for i, r := range resp.Results {
		switch r {
		case inboxpb.InsertResult_INSERT_OK:
			n++
			if i < len(resp.Owners) && resp.Owners[i] != "" {
				fe := ownerFrontend(resp.Owners[i])
				notify[fe] = append(notify[fe], &mqttpb.SessionRef{Tenant: tenant, ClientId: items[i].Inbox, Owner: resp.Owners[i]})
			}
		case inboxpb.InsertResult_INSERT_DROPPED:
			s.m.dropped.WithLabelValues("inbox_full").Inc()
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
	return n, nil
}

// maxInsertBatch bounds the items of one batched Insert.
const maxInsertBatch = 1024

// insertBatcher coalesces the inbox inserts of concurrent publishes: while
// one Insert is in flight, the next ones queue and go together in the
// following call (one proposal per range for all of them). A publisher
// waits for its own publish, so its messages keep their order.
type insertBatcher struct {
	mu      sync.Mutex
	pending []*insertCall
	running bool
}

type insertCall struct {
	ctx   context.Context
	items []*inboxpb.InsertItem
	resp  *inboxpb.InsertResponse
	err   error
	done  chan struct{}
}

func (b *insertBatcher) insert(ctx context.Context, ib Inbox, items []*inboxpb.InsertItem) (*inboxpb.InsertResponse, error) {
	call := &insertCall{ctx: ctx, items: items, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, call)
	if !b.running {
		b.running = true
		go b.run(ib)
	}
	b.mu.Unlock()
	select {
	case <-call.done:
		return call.resp, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *insertBatcher) run(ib Inbox) {
	for {
		b.mu.Lock()
		var batch []*insertCall
		n := 0
		for len(b.pending) > 0 && (n == 0 || n+len(b.pending[0].items) <= maxInsertBatch) {
			c := b.pending[0]
			b.pending[0] = nil
			b.pending = b.pending[1:]
			if c.ctx.Err() != nil {
				c.err = c.ctx.Err()
				close(c.done)
				continue
			}
			batch = append(batch, c)
			n += len(c.items)
		}
		if len(batch) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		items := make([]*inboxpb.InsertItem, 0, n)
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
		resp, err := ib.Insert(ctx, items)
		cancel()
		off := 0
		for _, c := range batch {
			if err != nil {
				c.err = err
			} else {
				r := &inboxpb.InsertResponse{Results: resp.Results[off : off+len(c.items)]}
				if len(resp.Owners) >= off+len(c.items) {
					r.Owners = resp.Owners[off : off+len(c.items)]
				}
				c.resp = r
			}
			off += len(c.items)
			close(c.done)
		}
	}
}

// notify tells the frontend fe (a receiver ID) that the sessions' inboxes
// have messages; for this frontend, in-process.
func (s *Server) notify(fe string, refs []*mqttpb.SessionRef) {
	if fe == s.cfg.ReceiverID {
		s.wakeSessions(refs)
		return
	}
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
			c.sess.wakeUp()
		}
	}
}

// kickOwner closes the connection owner (on this or another frontend) whose
// session a new connection took over, and waits until it ended and wrote
// its in-flight state to the inbox, or ctx ends. An owner that cannot be
// reached finds out by itself: its next commit or fetch names another owner.
func (s *Server) kickOwner(ctx context.Context, tenant, clientID, owner string) {
	fe := ownerFrontend(owner)
	if fe == s.cfg.ReceiverID {
		s.kickLocal(ctx, tenant, clientID, owner)
		return
	}
	addr, ok := kickAddr(fe) // bug zoo (mqtt/bugzoo): receiverAddr in a normal build
	if !ok {
		return
	}
	c, err := s.peers.client(addr)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, min(s.cfg.RequestTimeout, 3*time.Second))
	defer cancel()
	if _, err := c.Kick(ctx, &mqttpb.KickRequest{Receiver: fe, ReasonCode: uint32(packet.SessionTakenOver),
		Session: &mqttpb.SessionRef{Tenant: tenant, ClientId: clientID, Owner: owner}}); err != nil {
		s.log.Info("telling the previous owner of a session to close failed", "tenant", tenant, "client", clientID, "owner", owner, "err", err)
	}
}

func (s *Server) kickLocal(ctx context.Context, tenant, clientID, owner string) bool {
	c := s.session(tenant, clientID)
	if c == nil || c.sess == nil || c.sess.owner != owner {
		return false
	}
	c.kick(packet.SessionTakenOver) // MQTT-3.1.4-3
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
	_, err := s.dispatch(ctx, tenant, m)
	return err
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
	if req.Receiver != f.s.cfg.ReceiverID || req.Session == nil {
		return &mqttpb.KickResponse{UnknownReceiver: true}, nil
	}
	found := f.s.kickLocal(ctx, req.Session.Tenant, req.Session.ClientId, req.Session.Owner)
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
