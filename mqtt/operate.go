package mqtt

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/mqtt/fanout"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
	"github.com/bifrost-mq/bifrost/ranges"
)

// An operator's calls (the HTTP API): each takes the path a client's packet
// takes (PUBLISH, SUBSCRIBE, a takeover's kick), so that what an operator
// does and what a client does cannot drift apart.

var (
	// ErrInvalid: the request is malformed (a bad topic or filter, a QoS
	// over 2, a payload that is not UTF-8 while it says it is).
	ErrInvalid = errors.New("invalid request")
	// ErrNoSession: the client ID has no session (or, for the calls that
	// change subscriptions, no persistent one).
	ErrNoSession = errors.New("no such session")
	// ErrRefused: the store refused what was valid (a tenant's retained
	// message limit).
	ErrRefused = errors.New("refused")
)

// Publish hands a message to its subscribers as a client's PUBLISH does:
// stored as the topic's retained message first when m.Retain (an empty
// payload deletes it), then matched in dist and delivered to the sessions
// and inboxes it matched. It returns how many subscribers matched.
func (s *Server) Publish(ctx context.Context, tenant string, m *mqttpb.Message) (int, error) {
	if err := validMessage(m); err != nil {
		return 0, err
	}
	if m.Retain {
		if err := s.SetRetained(ctx, tenant, m); err != nil {
			return 0, err
		}
	}
	s.m.published.WithLabelValues(fmt.Sprint(m.Qos)).Inc()
	return s.dispatch(ctx, tenant, m)
}

func validMessage(m *mqttpb.Message) error {
	if err := dist.ValidateTopicName(m.Topic); err != nil {
		return fmt.Errorf("%w: topic %.128q: %v", ErrInvalid, m.Topic, err)
	}
	if reservedTopic(m.Topic) {
		return fmt.Errorf("%w: topic %.128q is reserved for the broker", ErrInvalid, m.Topic)
	}
	if m.Qos > 2 {
		return fmt.Errorf("%w: qos %d: want 0, 1 or 2", ErrInvalid, m.Qos)
	}
	if m.ResponseTopic != "" && dist.ValidateTopicName(m.ResponseTopic) != nil {
		return fmt.Errorf("%w: response topic %.128q is not a topic name", ErrInvalid, m.ResponseTopic) // MQTT-3.3.2-14
	}
	if m.HasPayloadFormat && m.PayloadFormat > 1 {
		return fmt.Errorf("%w: payload format %d: want 0 or 1", ErrInvalid, m.PayloadFormat)
	}
	if m.HasPayloadFormat && m.PayloadFormat == 1 && !utf8.Valid(m.Payload) {
		return fmt.Errorf("%w: the payload format says UTF-8 and the payload is not", ErrInvalid) // MQTT-3.3.2-4
	}
	return nil
}

// SetRetained stores m as its topic's retained message (an empty payload
// clears it) without publishing it.
func (s *Server) SetRetained(ctx context.Context, tenant string, m *mqttpb.Message) error {
	if err := validMessage(m); err != nil {
		return err
	}
	err := s.retain(ctx, tenant, m)
	if refused := (*retainRefusedError)(nil); errors.As(err, &refused) {
		s.m.retainFailures.WithLabelValues("refused").Inc()
		if refused.result == retainpb.Result_RESULT_INVALID {
			return fmt.Errorf("%w: %s", ErrInvalid, refused.reason)
		}
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return err
}

// Retained returns a page of the tenant's retained messages that match
// filter (a topic name matches itself), at most limit, from the cursor
// from (nil: the first page); next is the next page's cursor, nil when
// none is left.
func (s *Server) Retained(ctx context.Context, tenant, filter string, from []byte, limit int) (msgs []*mqttpb.Message, next []byte, err error) {
	if err := dist.ValidateFilter(filter); err != nil {
		return nil, nil, fmt.Errorf("%w: filter %.128q: %v", ErrInvalid, filter, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.cfg.Retain.Match(ctx, &retainpb.MatchRequest{Tenant: tenant, Filter: filter, Limit: uint32(limit),
		NowUnixMs: time.Now().UnixMilli(), From: from})
	if err != nil {
		return nil, nil, err
	}
	for _, rm := range resp.Messages {
		msgs = append(msgs, retainedMessage(rm))
	}
	return msgs, resp.Next, nil
}

// SessionInfo is what an operator sees of a session.
type SessionInfo struct {
	ClientID string
	// Persistent: the session lives in an inbox (it outlives its
	// connection); else it is a connection's clean session.
	Persistent bool
	Online     bool
	// Frontend is the gRPC address of the frontend whose connection holds
	// the session ("" when offline).
	Frontend string
	// Subscriptions by filter (persistent sessions only).
	Subscriptions map[string]*inboxpb.SubOptions
	// QueuedQoS0 and QueuedQoS12 are the messages waiting in the inbox;
	// DroppedQoS0 and DroppedQoS12 those its limits dropped.
	QueuedQoS0, QueuedQoS12   uint64
	DroppedQoS0, DroppedQoS12 uint64
	// Inflight is the QoS 1 and 2 messages sent and not yet acknowledged:
	// the connection's count when it is on this frontend, else (-1 when
	// online elsewhere) what the inbox knows when offline.
	Inflight int
	// ExpirySeconds is the session expiry interval; ExpiresUnixMs when an
	// offline session ends (0: online, or a clean session).
	ExpirySeconds uint32
	ExpiresUnixMs int64
	CreatedUnixMs int64
	// DetachedUnixMs is when its last connection ended (0: online).
	DetachedUnixMs int64
}

// Session describes a client ID's session: its persistent one from the
// inbox, else its clean session on whichever frontend it is connected to
// (ErrNoSession when none).
func (s *Server) Session(ctx context.Context, tenant, clientID string) (*SessionInfo, error) {
	if !validClientID(clientID) {
		return nil, fmt.Errorf("%w: client ID must be non-empty and free of NUL", ErrInvalid)
	}
	var meta *inboxpb.Meta
	if s.cfg.Inbox != nil {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
		var err error
		if meta, err = s.lookupSession(ctx, tenant, clientID); err != nil {
			return nil, err
		}
	}
	if meta == nil || meta.Transient {
		clean, _ := s.cleanEverywhere(ctx, &mqttpb.SessionsRequest{Tenant: tenant, ClientId: clientID})
		if len(clean) == 0 {
			return nil, ErrNoSession
		}
		return clean[0], nil
	}
	info := s.sessionInfo(meta)
	if local := s.session(tenant, clientID); local != nil && local.sess != nil && local.sess.owner == meta.Owner {
		info.Inflight = local.inflightCount()
	}
	return info, nil
}

// Sessions returns a page of the tenant's sessions whose client ID starts
// with prefix, after the client ID after, at most limit (1 to 1000), in
// client ID order: the persistent ones (from the inbox keyspace) and the
// clean ones connected to any frontend. next is the after of the next
// page ("" when none is left).
func (s *Server) Sessions(ctx context.Context, tenant, prefix, after string, limit int) ([]*SessionInfo, string, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	var out []*SessionInfo
	var more bool
	if s.cfg.Inbox != nil {
		ictx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		metas, next, err := s.cfg.Inbox.List(ictx, tenant, prefix, after, limit)
		cancel()
		if err != nil {
			return nil, "", err
		}
		more = next != ""
		for _, m := range metas {
			info := s.sessionInfo(m)
			if c := s.session(tenant, m.Inbox); c != nil && c.sess != nil && c.sess.owner == m.Owner {
				info.Inflight = c.inflightCount()
			}
			out = append(out, info)
		}
	}
	// Each source answered its first limit after the cursor, so the first
	// limit of them all are the page.
	clean, cleanMore := s.cleanEverywhere(ctx, &mqttpb.SessionsRequest{Tenant: tenant, Prefix: prefix, After: after, Limit: uint32(limit)})
	out = append(out, clean...)
	slices.SortStableFunc(out, func(a, b *SessionInfo) int { return strings.Compare(a.ClientID, b.ClientID) })
	out = slices.CompactFunc(out, func(a, b *SessionInfo) bool { return a.ClientID == b.ClientID })
	if len(out) > limit {
		out, more = out[:limit], true
	}
	if !more && !cleanMore || len(out) == 0 {
		return out, "", nil
	}
	return out, out[len(out)-1].ClientID, nil
}

// cleanSessions lists this frontend's clean sessions as req asks.
func (s *Server) cleanSessions(req *mqttpb.SessionsRequest) *mqttpb.SessionsResponse {
	var conns []*conn
	s.mu.Lock()
	if req.ClientId != "" {
		if c := s.sessions[sessionKey{req.Tenant, req.ClientId}]; c != nil && c.sess == nil {
			conns = append(conns, c)
		}
	} else {
		for k, c := range s.sessions {
			if k.tenant == req.Tenant && c.sess == nil && k.clientID > req.After && strings.HasPrefix(k.clientID, req.Prefix) {
				conns = append(conns, c)
			}
		}
	}
	s.mu.Unlock()
	slices.SortFunc(conns, func(a, b *conn) int { return strings.Compare(a.key.clientID, b.key.clientID) })
	resp := &mqttpb.SessionsResponse{}
	if limit := int(req.Limit); limit > 0 && len(conns) > limit {
		conns, resp.More = conns[:limit], true
	}
	for _, c := range conns {
		resp.Sessions = append(resp.Sessions, &mqttpb.OnlineSession{ClientId: c.key.clientID, Inflight: uint32(c.inflightCount())})
	}
	return resp
}

// cleanEverywhere asks every frontend (this one included) for its clean
// sessions; more is true when one has more than it answered. A frontend
// that does not answer within a couple of seconds is left out: a dead one
// has no connections, and a live one that is slow is logged.
func (s *Server) cleanEverywhere(ctx context.Context, req *mqttpb.SessionsRequest) (out []*SessionInfo, more bool) {
	add := func(addr string, resp *mqttpb.SessionsResponse) {
		more = more || resp.More
		for _, o := range resp.Sessions {
			out = append(out, &SessionInfo{ClientID: o.ClientId, Online: true, Frontend: addr, Inflight: int(o.Inflight),
				Subscriptions: map[string]*inboxpb.SubOptions{}})
		}
	}
	add(s.grpcAddr(), s.cleanSessions(req))
	ctx, cancel := context.WithTimeout(ctx, min(s.cfg.RequestTimeout, 2*time.Second))
	defer cancel()
	var mu sync.Mutex
	s.askFrontends(func(addr string, c mqttpb.FrontendClient, err error) {
		var resp *mqttpb.SessionsResponse
		if err == nil {
			resp, err = c.Sessions(ctx, req)
		}
		if err != nil {
			s.log.Warn("listing a frontend's clean sessions failed", "frontend", addr, "err", err)
			return
		}
		mu.Lock()
		add(addr, resp)
		mu.Unlock()
	})
	return out, more
}

// askFrontends calls ask for every other frontend at once, with its client
// or the error reaching it, and waits for them all; ask guards what they
// share.
func (s *Server) askFrontends(ask func(addr string, c mqttpb.FrontendClient, err error)) {
	if s.cfg.Frontends == nil {
		return
	}
	self := s.grpcAddr()
	var wg sync.WaitGroup
	for _, addr := range s.frontends() {
		if addr == self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.peers.reach(addr)
			ask(addr, c, err)
		}()
	}
	wg.Wait()
}

func (f *frontendService) Sessions(ctx context.Context, req *mqttpb.SessionsRequest) (*mqttpb.SessionsResponse, error) {
	return f.s.cleanSessions(req), nil
}

func (s *Server) sessionInfo(m *inboxpb.Meta) *SessionInfo {
	info := &SessionInfo{ClientID: m.Inbox, Persistent: true, Subscriptions: maps.Clone(m.Subscriptions),
		QueuedQoS0: m.Qos0.GetTail() - m.Qos0.GetHead(), QueuedQoS12: m.Qos12.GetTail() - m.Qos12.GetHead(),
		DroppedQoS0: m.Qos0.GetDropped(), DroppedQoS12: m.Qos12.GetDropped(),
		ExpirySeconds: m.ExpirySeconds, CreatedUnixMs: m.CreatedUnixMs, DetachedUnixMs: m.DetachedUnixMs}
	if info.Subscriptions == nil {
		info.Subscriptions = map[string]*inboxpb.SubOptions{}
	}
	if m.DetachedUnixMs == 0 && m.Owner != "" {
		info.Online = true
		info.Frontend, _ = receiverAddr(ownerFrontend(m.Owner))
		info.Inflight = -1
	} else {
		info.ExpiresUnixMs = m.DetachedUnixMs + int64(m.ExpirySeconds)*1000
		if m.DupBelow > m.Qos12.GetHead() {
			info.Inflight = int(m.DupBelow - m.Qos12.GetHead())
		}
	}
	return info
}

func (c *conn) inflightCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inflight)
}

func (s *Server) grpcAddr() string {
	a, _ := receiverAddr(s.cfg.ReceiverID)
	return a
}

func validClientID(id string) bool {
	return id != "" && len(id) <= 1024 && !slices.Contains([]byte(id), 0)
}

// Subscribe adds (or renews) a subscription of a persistent session as
// the session's own SUBSCRIBE would. Offline: recorded in its inbox,
// routed in dist to the inbox, announced to the frontends' match caches.
// Connected, to this frontend or another: applied by its connection as a
// SUBSCRIBE it read (the same record and route, the connection's
// subscriptions), and the retained messages sent by retainHandling (0:
// sent, 1: only for a new subscription, 2: none; MQTT-3.3.1-9..11). A
// clean session is not changed (ErrNoSession); a session whose frontend
// cannot be reached is ranges.ErrUnavailable.
func (s *Server) Subscribe(ctx context.Context, tenant, clientID, filter string, opts *inboxpb.SubOptions, retainHandling uint32) error {
	sub, err := dist.ParseSubscription(filter)
	if err != nil {
		return fmt.Errorf("%w: filter %.128q: %v", ErrInvalid, filter, err)
	}
	if opts.GetQos() > 2 {
		return fmt.Errorf("%w: qos %d: want 0, 1 or 2", ErrInvalid, opts.GetQos())
	}
	if retainHandling > 2 {
		return fmt.Errorf("%w: retain handling %d: want 0, 1 or 2", ErrInvalid, retainHandling)
	}
	if sub.Group != "" && opts.GetNoLocal() {
		return fmt.Errorf("%w: no local on a shared subscription", ErrInvalid) // MQTT-3.8.3-4
	}
	ch := &mqttpb.SubscriptionChange{Filter: filter, Qos: opts.GetQos(), NoLocal: opts.GetNoLocal(),
		RetainAsPublished: opts.GetRetainAsPublished(), SubscriptionId: opts.GetSubscriptionId(), RetainHandling: retainHandling}
	_, err = s.changeSubscription(ctx, tenant, clientID, sub, ch)
	return err
}

// Unsubscribe removes a subscription of a persistent session as its
// UNSUBSCRIBE would, wherever the session is (as Subscribe); found is false
// when it had no such subscription.
func (s *Server) Unsubscribe(ctx context.Context, tenant, clientID, filter string) (found bool, err error) {
	sub, err := dist.ParseSubscription(filter)
	if err != nil {
		return false, fmt.Errorf("%w: filter %.128q: %v", ErrInvalid, filter, err)
	}
	return s.changeSubscription(ctx, tenant, clientID, sub, &mqttpb.SubscriptionChange{Filter: filter, Remove: true})
}

// errMoved: the session's connection ended, or one attached, while a
// change was on its way; the change is tried again where the session is
// now.
var errMoved = errors.New("the session moved")

// changeSubscription applies ch where the persistent session is: its
// inbox when offline, its connection when connected. removed: an
// unsubscribe removed a subscription.
func (s *Server) changeSubscription(ctx context.Context, tenant, clientID string, sub dist.Subscription, ch *mqttpb.SubscriptionChange) (removed bool, err error) {
	for range 3 {
		var meta *inboxpb.Meta
		if meta, err = s.persistentSession(ctx, tenant, clientID); err != nil {
			return false, err
		}
		switch {
		case meta.DetachedUnixMs == 0 && meta.Owner != "":
			ch.Session = &mqttpb.SessionRef{Tenant: tenant, ClientId: clientID, Owner: meta.Owner}
			removed, err = s.changeConnected(ctx, ch)
		case ch.Remove:
			removed, err = s.unsubscribeOffline(ctx, meta, tenant, clientID, sub)
		default:
			err = s.subscribeOffline(ctx, meta, tenant, clientID, sub, &inboxpb.SubOptions{Qos: ch.Qos, NoLocal: ch.NoLocal,
				RetainAsPublished: ch.RetainAsPublished, SubscriptionId: ch.SubscriptionId})
		}
		if !errors.Is(err, errMoved) {
			return removed, err
		}
	}
	return false, fmt.Errorf("%w: session %.128q kept moving between connections", ranges.ErrUnavailable, clientID)
}

// changeConnected hands ch to the frontend whose connection is
// ch.Session.Owner (this one, or over its Frontend service).
func (s *Server) changeConnected(ctx context.Context, ch *mqttpb.SubscriptionChange) (removed bool, err error) {
	recv := ownerFrontend(ch.Session.Owner)
	var found bool
	if recv == s.cfg.ReceiverID {
		found, removed, err = s.changeLocal(ch)
	} else {
		addr, ok := receiverAddr(recv)
		if !ok {
			return false, fmt.Errorf("%w: the session's owner %q names no frontend", ranges.ErrUnavailable, ch.Session.Owner)
		}
		c, err := s.peers.reach(addr)
		if err != nil {
			return false, fmt.Errorf("%w: frontend %s, which holds the session: %v", ranges.ErrUnavailable, addr, err)
		}
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
		resp, err := c.ChangeSubscription(ctx, ch, grpc.WaitForReady(false))
		if err != nil {
			return false, changeError(addr, err)
		}
		found, removed = resp.Found, resp.Removed
	}
	if err == nil && !found {
		err = errMoved
	}
	return removed, err
}

// changeError turns the owning frontend's answer back into the sentinel
// its changeLocal returned.
func changeError(addr string, err error) error {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %s", ErrInvalid, st.Message())
	case codes.FailedPrecondition:
		return fmt.Errorf("%w: %s", ErrRefused, st.Message())
	}
	return fmt.Errorf("%w: frontend %s, which holds the session: %v", ranges.ErrUnavailable, addr, err)
}

func (f *frontendService) ChangeSubscription(ctx context.Context, req *mqttpb.SubscriptionChange) (*mqttpb.SubscriptionChangeResult, error) {
	if req.Session == nil {
		return nil, status.Error(codes.InvalidArgument, "no session named")
	}
	found, removed, err := f.s.changeLocal(req)
	switch {
	case errors.Is(err, ErrInvalid):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrRefused):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case err != nil:
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &mqttpb.SubscriptionChangeResult{Found: found, Removed: removed}, nil
}

// changeLocal applies ch by this frontend's connection ch.Session.Owner;
// found is false when it has none (any more).
func (s *Server) changeLocal(ch *mqttpb.SubscriptionChange) (found, removed bool, err error) {
	c := s.session(ch.Session.Tenant, ch.Session.ClientId)
	if c == nil || c.sess == nil || c.sess.owner != ch.Session.Owner {
		return false, false, nil
	}
	return c.changeSubscription(ch)
}

// changeSubscription applies an operator's change as the reader applies
// a SUBSCRIBE or UNSUBSCRIBE, serialised with them by subsMu; found is
// false when the connection ended first.
func (c *conn) changeSubscription(ch *mqttpb.SubscriptionChange) (found, removed bool, err error) {
	sub, err := dist.ParseSubscription(ch.Filter)
	if err != nil {
		return true, false, fmt.Errorf("%w: filter %.128q: %v", ErrInvalid, ch.Filter, err)
	}
	c.subsMu.Lock()
	if c.subsEnded {
		c.subsMu.Unlock()
		return false, false, nil
	}
	if ch.Remove {
		removed = c.unsubscribeLocked(ch.Filter)
		c.subsMu.Unlock()
		return true, removed, nil
	}
	_, existed := c.subs[ch.Filter]
	v5 := c.version == packet.V5
	qos := min(byte(ch.Qos), 2, c.set.MaxQoS)
	res, err := c.subscribeLocked(ch.Filter, sub, fanout.Options{QoS: qos, NoLocal: ch.NoLocal && v5,
		RetainAsPublished: ch.RetainAsPublished && v5, SubscriptionID: ch.SubscriptionId})
	c.subsMu.Unlock()
	if err != nil {
		if res == distpb.Result_RESULT_LIMIT {
			return true, false, fmt.Errorf("%w: %v", ErrRefused, err)
		}
		return true, false, err
	}
	if wantsRetained(sub, byte(ch.RetainHandling), existed) {
		c.feedRetained([]*retainedReq{{filter: ch.Filter, qos: qos, subID: ch.SubscriptionId}})
	}
	return true, false, nil
}

// subscribeOffline records and routes a subscription of a persistent
// session no connection owns.
func (s *Server) subscribeOffline(ctx context.Context, meta *inboxpb.Meta, tenant, clientID string, sub dist.Subscription, opts *inboxpb.SubOptions) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	key := sub.String()
	out, err := s.cfg.Inbox.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Subscribe{Subscribe: &inboxpb.SubscribeRequest{
		Tenant: tenant, Inbox: clientID, Incarnation: meta.Incarnation, Filter: key, Options: opts, DetachedOnly: true}}})
	if err := inboxResult(out, err); err != nil {
		return err
	}
	dout, err := s.cfg.Dist.AddRoute(ctx, &distpb.AddRouteRequest{Route: &distpb.Route{Tenant: tenant, Subscription: key,
		Receiver: &distpb.Receiver{Kind: receiverInbox, Id: inbox.ReceiverID(clientID, meta.Incarnation)}}, MaxRoutesPerTenant: s.limitsOf(tenant).MaxRoutes})
	if err == nil && dout.Result != distpb.Result_RESULT_OK && dout.Result != distpb.Result_RESULT_EXISTS {
		err = fmt.Errorf("%w: dist refused the route: %s %s", ErrRefused, dout.Result, dout.Reason)
	}
	if err != nil {
		s.m.routeChanges.WithLabelValues("add", "error").Inc()
		// Not routed: not recorded either, as a failed SUBSCRIBE.
		_, _ = s.cfg.Inbox.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Unsubscribe{Unsubscribe: &inboxpb.UnsubscribeRequest{
			Tenant: tenant, Inbox: clientID, Incarnation: meta.Incarnation, Filter: key, DetachedOnly: true}}})
		return err
	}
	s.m.routeChanges.WithLabelValues("add", "ok").Inc()
	s.cache.invalidate(tenant)
	s.broadcastInvalidate(ctx, tenant)
	return nil
}

// unsubscribeOffline removes a subscription of a persistent session no
// connection owns.
func (s *Server) unsubscribeOffline(ctx context.Context, meta *inboxpb.Meta, tenant, clientID string, sub dist.Subscription) (found bool, err error) {
	key := sub.String()
	if _, ok := meta.Subscriptions[key]; !ok {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	out, err := s.cfg.Inbox.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Unsubscribe{Unsubscribe: &inboxpb.UnsubscribeRequest{
		Tenant: tenant, Inbox: clientID, Incarnation: meta.Incarnation, Filter: key, DetachedOnly: true}}})
	if err := inboxResult(out, err); err != nil {
		return false, err
	}
	// Messages the route queues meanwhile are dropped at delivery, as
	// after an UNSUBSCRIBE (MQTT-3.10.4-2).
	s.removeInboxRoute(ctx, tenant, key, inbox.ReceiverID(clientID, meta.Incarnation))
	s.cache.invalidate(tenant)
	s.broadcastInvalidate(ctx, tenant)
	return true, nil
}

// persistentSession is the inbox record of a client ID's persistent
// session (ErrNoSession when it has none).
func (s *Server) persistentSession(ctx context.Context, tenant, clientID string) (*inboxpb.Meta, error) {
	if !validClientID(clientID) {
		return nil, fmt.Errorf("%w: client ID must be non-empty and free of NUL", ErrInvalid)
	}
	if s.cfg.Inbox == nil {
		return nil, ErrNoSession
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	meta, err := s.lookupSession(ctx, tenant, clientID)
	if err != nil {
		return nil, err
	}
	if meta == nil || meta.Transient {
		return nil, ErrNoSession
	}
	return meta, nil
}

func inboxResult(out *inboxpb.Output, err error) error {
	switch {
	case err != nil:
		return err
	case out.Result == inboxpb.Result_RESULT_NO_INBOX:
		return ErrNoSession // gone, or a new incarnation, since it was read
	case out.Result == inboxpb.Result_RESULT_CONFLICT:
		return errMoved // a connection attached since it was read
	case out.Result != inboxpb.Result_RESULT_OK:
		return fmt.Errorf("%w: inbox: %s %s", ErrRefused, out.Result, out.Reason)
	}
	return nil
}

// Kick closes the connection of a client ID wherever it is connected (a
// 5.0 client gets DISCONNECT 0x98, administrative action) and waits until
// it ended; found is false when no frontend had it. A persistent session
// stays (its expiry runs from now), as after any disconnect.
func (s *Server) Kick(ctx context.Context, tenant, clientID string) (found bool, err error) {
	if !validClientID(clientID) {
		return false, fmt.Errorf("%w: client ID must be non-empty and free of NUL", ErrInvalid)
	}
	if s.kickLocal(ctx, tenant, clientID, "", packet.AdministrativeAction) {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	var mu sync.Mutex
	var errs []error
	s.askFrontends(func(addr string, c mqttpb.FrontendClient, err error) {
		var resp *mqttpb.KickResponse
		if err == nil {
			// No receiver and no owner: whichever process serves addr
			// closes whichever connection holds the client ID.
			resp, err = c.Kick(ctx, &mqttpb.KickRequest{ReasonCode: uint32(packet.AdministrativeAction),
				Session: &mqttpb.SessionRef{Tenant: tenant, ClientId: clientID}}, grpc.WaitForReady(false))
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("frontend %s: %w", addr, err))
		}
		found = found || resp.GetFound()
	})
	if found || len(errs) == 0 {
		return found, nil
	}
	// Not found, and not every frontend could be asked.
	return false, fmt.Errorf("%w: %w", ranges.ErrUnavailable, errors.Join(errs...))
}
