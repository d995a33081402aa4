package mqtt

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	mathrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/mqtt/fanout"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
)

// Receiver kinds in dist routes.
const (
	receiverFrontend = 1
	receiverInbox    = 2
)

// NewReceiverID names a frontend process in dist routes: the gRPC address
// other frontends dial to reach it, and a random incarnation so that the
// routes of an earlier process at the same address are told apart (and
// removed as stale when delivery to them finds no such receiver).
func NewReceiverID(grpcAddr string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "fe:" + grpcAddr + "#" + hex.EncodeToString(b[:])
}

// receiverAddr is the gRPC address inside a receiver ID.
func receiverAddr(id string) (string, bool) {
	rest, ok := strings.CutPrefix(id, "fe:")
	if !ok {
		return "", false
	}
	addr, _, ok := strings.Cut(rest, "#")
	return addr, ok && addr != ""
}

// matchCache caches dist matches per (tenant, topic). A route change bumps
// the tenant's generation and clears it; a match that started before the
// change is not stored after it (it may have missed the new route).
type matchCache struct {
	ttl time.Duration
	mu  sync.Mutex
	gen map[string]uint64
	m   map[string]map[string]cachedMatch
}

type cachedMatch struct {
	routes []*distpb.Matched
	at     time.Time
}

const maxCachedTopics = 1 << 16

func newMatchCache(ttl time.Duration) *matchCache {
	return &matchCache{ttl: ttl, gen: map[string]uint64{}, m: map[string]map[string]cachedMatch{}}
}

func (c *matchCache) get(tenant, topic string, now time.Time) (routes []*distpb.Matched, ok bool, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gen = c.gen[tenant]
	if c.ttl < 0 {
		return nil, false, gen
	}
	e, ok := c.m[tenant][topic]
	if !ok || now.Sub(e.at) > c.ttl {
		return nil, false, gen
	}
	return e.routes, true, gen
}

func (c *matchCache) put(tenant, topic string, gen uint64, routes []*distpb.Matched, now time.Time) {
	if c.ttl < 0 {
		return
	}
	for _, r := range routes {
		// A shared group's member is picked per match; caching the pick
		// would pin the group to one member.
		if strings.HasPrefix(r.Subscription, "$share/") || strings.HasPrefix(r.Subscription, "$oshare/") {
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen[tenant] != gen {
		return
	}
	t := c.m[tenant]
	if t == nil || len(t) >= maxCachedTopics {
		t = map[string]cachedMatch{}
		c.m[tenant] = t
	}
	t[topic] = cachedMatch{routes: routes, at: now}
}

func (c *matchCache) invalidate(tenant string) {
	c.mu.Lock()
	c.gen[tenant]++
	delete(c.m, tenant)
	c.mu.Unlock()
}

// peers holds client connections to other frontends.
type peers struct {
	tls   *clustertls.Credentials
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// down remembers addresses that failed recently, so that a dead
	// frontend's stale routes do not cost every publish a dial.
	down map[string]time.Time
	// absent remembers since when a failing address has been missing from
	// gossip: past Config.DeadFrontendAfter its routes are removed.
	absent map[string]time.Time
	// heard remembers when a frontend last sent this one a claim: it runs,
	// whether gossip lists it yet or not.
	heard map[string]time.Time
}

// frontends are the other frontends' addresses to tell of a claim or a
// route change: those gossip lists, and those heard from in the last
// DeadFrontendAfter. A frontend that restarted serves CONNECTs before the
// others' gossip lists it again (memberlist takes it back only after it
// refutes its death), and its connections must still be closed by a newer
// CONNECT elsewhere (before, that claim was never sent: two connections of
// one client ID stayed open together).
func (s *Server) frontends() []string {
	out := slices.Clip(s.cfg.Frontends()) // shared: appends copy it
	for _, addr := range s.peers.heardSince(time.Now().Add(-s.cfg.DeadFrontendAfter)) {
		if !slices.Contains(out, addr) {
			out = append(out, addr)
		}
	}
	return out
}

// heardSince lists the frontends heard from after t, and forgets those
// heard from before.
func (p *peers) heardSince(t time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for addr, at := range p.heard {
		if at.After(t) {
			out = append(out, addr)
		} else {
			delete(p.heard, addr)
		}
	}
	return out
}

// gone reports whether addr has been failing and absent from the list of
// live frontends for longer than after.
func (p *peers) gone(addr string, live []string, after time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range live {
		if a == addr {
			delete(p.absent, addr)
			return false
		}
	}
	if p.absent == nil {
		p.absent = map[string]time.Time{}
	}
	since, ok := p.absent[addr]
	if !ok {
		p.absent[addr] = time.Now()
		return false
	}
	return time.Since(since) > after
}

const peerDownFor = 5 * time.Second

// client is a client of the frontend at addr, or an error if it failed in
// the last peerDownFor: for notifications, which a dead frontend's stale
// routes must not make every publish wait for.
func (p *peers) client(addr string) (mqttpb.FrontendClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.downLocked(addr) {
		return nil, fmt.Errorf("frontend %s failed recently", addr)
	}
	return p.connLocked(addr)
}

// reach is a client of the frontend at addr even if it failed recently: for
// a Kick, which must be tried, since the frontend may be back (restarted)
// with the connection the takeover must close.
func (p *peers) reach(addr string) (mqttpb.FrontendClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.connLocked(addr)
}

// peerBackoff reconnects to a frontend that went away within a second of
// its return: gRPC's default backoff grows to two minutes, and a Kick to a
// restarted frontend waited for it (jepsen: two connections of one client
// ID open together for 4.6 s after a frontend restart).
var peerBackoff = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
}

func (p *peers) connLocked(addr string) (mqttpb.FrontendClient, error) {
	c := p.conns[addr]
	if c == nil {
		var err error
		c, err = clustertls.NewClient(p.tls, addr, grpc.WithConnectParams(peerBackoff))
		if err != nil {
			return nil, err
		}
		if p.conns == nil {
			p.conns = map[string]*grpc.ClientConn{}
		}
		p.conns[addr] = c
	}
	return mqttpb.NewFrontendClient(c), nil
}

// isDown says the frontend at addr failed in the last peerDownFor.
func (p *peers) isDown(addr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.downLocked(addr)
}

func (p *peers) downLocked(addr string) bool {
	t, ok := p.down[addr]
	return ok && time.Since(t) < peerDownFor
}

func (p *peers) failed(addr string) {
	p.mu.Lock()
	if p.down == nil {
		p.down = map[string]time.Time{}
	}
	p.down[addr] = time.Now()
	p.mu.Unlock()
}

// alive notes that the frontend at addr runs (it sent a claim): it forgets
// that it failed, and a connection to it that waits out a reconnect
// backoff tries again at once. A frontend that restarted was otherwise
// treated as down for peerDownFor after its last failure, and CONNECTs
// elsewhere did not wait for it to close its connections.
func (p *peers) alive(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.heard == nil {
		p.heard = map[string]time.Time{}
	}
	p.heard[addr] = time.Now()
	if _, ok := p.down[addr]; !ok {
		return
	}
	delete(p.down, addr)
	if c := p.conns[addr]; c != nil {
		c.ResetConnectBackoff()
	}
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// routeLocks serialises the route changes of one (tenant, subscription) on
// this frontend, so that a SUBACK never overtakes the commit of the route
// another session's SUBSCRIBE started, and a removal never races an add.
type routeLocks struct {
	mu    sync.Mutex
	locks map[string]*routeLock
}

type routeLock struct {
	sync.Mutex
	refs int
}

func (l *routeLocks) lock(key string) func() {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*routeLock{}
	}
	rl := l.locks[key]
	if rl == nil {
		rl = &routeLock{}
		l.locks[key] = rl
	}
	rl.refs++
	l.mu.Unlock()
	rl.Lock()
	return func() {
		rl.Unlock()
		l.mu.Lock()
		rl.refs--
		if rl.refs == 0 {
			delete(l.locks, key)
		}
		l.mu.Unlock()
	}
}

// subscribe records a session's subscription and, if it is the first on
// this frontend, commits the dist route and tells the other frontends to
// drop their cached matches of the tenant. It returns the dist result.
func (s *Server) subscribe(ctx context.Context, tenant, session string, sub dist.Subscription, o fanout.Options) (distpb.Result, error) {
	unlock := s.routeLocks.lock(tenant + "\x00" + sub.String())
	defer unlock()
	if !s.fan.Subscribe(tenant, session, sub, o) {
		return distpb.Result_RESULT_OK, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	out, err := s.cfg.Dist.AddRoute(ctx, &distpb.AddRouteRequest{Route: s.route(tenant, sub), MaxRoutesPerTenant: s.limitsOf(tenant).MaxRoutes})
	if err == nil && out.Result != distpb.Result_RESULT_OK && out.Result != distpb.Result_RESULT_EXISTS {
		err = fmt.Errorf("dist refused the route: %s %s", out.Result, out.Reason)
	}
	if err != nil {
		s.fan.Unsubscribe(tenant, session, sub)
		s.m.routeChanges.WithLabelValues("add", "error").Inc()
		if out != nil {
			return out.Result, err
		}
		return distpb.Result_RESULT_OK, err
	}
	s.m.routeChanges.WithLabelValues("add", "ok").Inc()
	s.cache.invalidate(tenant)
	s.broadcastInvalidate(ctx, tenant)
	return distpb.Result_RESULT_OK, nil
}

// unsubscribe drops a session's subscription and, if it was the last on
// this frontend, the dist route. found is false if the session did not
// hold it.
func (s *Server) unsubscribe(ctx context.Context, tenant, session string, sub dist.Subscription) (found bool) {
	unlock := s.routeLocks.lock(tenant + "\x00" + sub.String())
	defer unlock()
	found, last := s.fan.Unsubscribe(tenant, session, sub)
	if last {
		s.removeRoute(ctx, tenant, sub.String(), s.cfg.ReceiverID)
	}
	return found
}

func (s *Server) route(tenant string, sub dist.Subscription) *distpb.Route {
	return &distpb.Route{Tenant: tenant, Subscription: sub.String(),
		Receiver: &distpb.Receiver{Kind: receiverFrontend, Id: s.cfg.ReceiverID}}
}

func (s *Server) removeRoute(ctx context.Context, tenant, sub, receiver string) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	_, err := s.cfg.Dist.RemoveRoute(ctx, &distpb.RemoveRouteRequest{Route: &distpb.Route{
		Tenant: tenant, Subscription: sub, Receiver: &distpb.Receiver{Kind: receiverFrontend, Id: receiver}}})
	if err != nil {
		s.m.routeChanges.WithLabelValues("remove", "error").Inc()
		s.log.Warn("removing a route failed", "tenant", tenant, "subscription", sub, "receiver", receiver, "err", err)
		return
	}
	s.m.routeChanges.WithLabelValues("remove", "ok").Inc()
	s.cache.invalidate(tenant)
}

// broadcastInvalidate tells every other frontend to drop its cached matches
// of the tenant, waiting a short while for them: the TTL covers the ones
// that do not answer in time.
func (s *Server) broadcastInvalidate(ctx context.Context, tenant string) {
	if s.cfg.Frontends == nil {
		return
	}
	self, _ := receiverAddr(s.cfg.ReceiverID)
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, addr := range s.frontends() {
		if addr == self {
			continue
		}
		c, err := s.peers.client(addr)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.InvalidateRoutes(ctx, &mqttpb.InvalidateRequest{Tenant: tenant}); err != nil {
				s.log.Debug("route invalidation not delivered", "frontend", addr, "err", err)
			}
		}()
	}
	wg.Wait()
}

// match returns the routes of a topic, from the cache or from dist.
func (s *Server) match(ctx context.Context, tenant, topic, publisher string, seed uint64) ([]*distpb.Matched, error) {
	now := time.Now()
	routes, ok, gen := s.cache.get(tenant, topic, now)
	if ok {
		s.m.matchCache.WithLabelValues("hit").Inc()
		return routes, nil
	}
	s.m.matchCache.WithLabelValues("miss").Inc()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	routes, err := s.matcher.match(ctx, tenant, topic, publisher, seed)
	if err != nil {
		return nil, err
	}
	s.cache.put(tenant, topic, gen, routes, now)
	return routes, nil
}

// dispatch hands a message to every receiver its topic matches and returns
// how many matching subscribers exist (sessions, inboxes, other frontends),
// whether or not each could take it (a full queue drops it, counted in
// bifrost_mqtt_dropped_total): 0 is "no matching subscribers". An error means the message may
// not have reached every receiver (dist could not be asked, or the inboxes
// did not take it).
func (s *Server) dispatch(ctx context.Context, tenant string, m *mqttpb.Message) (int, error) {
	type result struct {
		n   int
		err error
	}
	ch := make(chan result, 1)
	s.dispatchAsync(ctx, tenant, m, func(n int, err error) { ch <- result{n, err} })
	r := <-ch
	return r.n, r.err
}

// dispatchAsync is dispatch for a caller that goes on meanwhile: the
// transient receivers get the message before it returns, the persistent
// sessions' inboxes in the background. done is called exactly once, maybe
// before dispatchAsync returns, with what dispatch would return; it must
// not block. The inbox inserts of successive calls apply in call order.
func (s *Server) dispatchAsync(ctx context.Context, tenant string, m *mqttpb.Message, done func(int, error)) {
	if g := s.routeGate.Load(); g != nil {
		<-*g
	}
	seed := mathrand.Uint64()
	if len(m.Dedupe) >= 16 {
		// Routed again under the same key (qos2.go): the same $share picks,
		// so that the member that took it drops the second copy.
		seed = binary.BigEndian.Uint64(m.Dedupe[8:16])
	}
	routes, err := s.match(ctx, tenant, m.Topic, m.Publisher, seed)
	if err != nil {
		done(0, err)
		return
	}
	if len(routes) == 0 {
		done(0, nil)
		return
	}
	var local []string
	var inboxes []*distpb.Matched
	var remote map[string][]string
	for _, r := range routes {
		switch {
		case r.Receiver.GetKind() == receiverFrontend && r.Receiver.GetId() == s.cfg.ReceiverID:
			local = append(local, r.Subscription)
		case r.Receiver.GetKind() == receiverFrontend:
			if remote == nil {
				remote = map[string][]string{}
			}
			remote[r.Receiver.GetId()] = append(remote[r.Receiver.GetId()], r.Subscription)
		case r.Receiver.GetKind() == receiverInbox:
			inboxes = append(inboxes, r)
		}
	}
	n := 0
	if len(local) > 0 {
		delivered, gone := s.deliverLocal(tenant, m, local, seed)
		n += delivered
		s.removeGone(tenant, s.cfg.ReceiverID, gone)
	}
	for id, subs := range remote {
		if s.deliverRemote(ctx, tenant, id, m, subs, seed) {
			n++
		}
	}
	if len(inboxes) == 0 {
		done(n, nil)
		return
	}
	// Persistent sessions: the acknowledgement to the publisher waits for
	// their inboxes to have committed the message.
	s.insertInboxes(ctx, tenant, m, inboxes, func(k int, err error) {
		if err != nil {
			done(0, err)
			return
		}
		done(n+k, nil)
	})
}

// removeGone removes stale routes in the background: delivery must not
// wait for them.
func (s *Server) removeGone(tenant, receiver string, subs []string) {
	if len(subs) == 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for _, sub := range subs {
			if receiver == s.cfg.ReceiverID {
				// Our own route: only if still no session holds it, under
				// the route lock so a concurrent subscribe is not undone.
				parsed, err := dist.ParseSubscription(sub)
				if err != nil {
					continue
				}
				unlock := s.routeLocks.lock(tenant + "\x00" + sub)
				if !s.fan.Has(tenant, parsed) {
					s.removeRoute(s.ctx, tenant, sub, receiver)
				}
				unlock()
				continue
			}
			s.removeRoute(s.ctx, tenant, sub, receiver)
		}
	}()
}

// deliverLocal hands a message to this frontend's sessions of the
// subscriptions; it returns how many sessions matched (each took the
// message or had to drop it) and the subscriptions no session holds.
func (s *Server) deliverLocal(tenant string, m *mqttpb.Message, subs []string, seed uint64) (int, []string) {
	ds, gone := s.fan.DeliveriesFor(tenant, m.Publisher, seed, subs)
	n := 0
	for _, d := range ds {
		c := s.session(tenant, d.Session)
		if c == nil {
			continue
		}
		// Counted whether or not the session could take it (a full
		// queue drops it, counted there): it is a matching subscriber.
		c.deliver(m, min(byte(m.Qos), d.QoS), m.Retain && d.RetainAsPublished, d.SubscriptionIDs)
		n++
	}
	return n, gone
}

func (s *Server) deliverRemote(ctx context.Context, tenant, receiver string, m *mqttpb.Message, subs []string, seed uint64) bool {
	addr, ok := receiverAddr(receiver)
	if !ok {
		s.m.remote.WithLabelValues("bad_receiver").Inc()
		return false
	}
	c, err := s.peers.client(addr)
	if err != nil {
		s.m.remote.WithLabelValues("unreachable").Inc()
		if s.cfg.Frontends != nil && s.peers.gone(addr, s.cfg.Frontends(), s.cfg.DeadFrontendAfter) {
			s.log.Info("removing the routes of a dead frontend", "tenant", tenant, "receiver", receiver)
			s.removeGone(tenant, receiver, subs)
		}
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := c.Deliver(ctx, &mqttpb.DeliverRequest{Receiver: receiver, Tenant: tenant, Message: m, Subscriptions: subs, Seed: seed})
	if err != nil {
		s.peers.failed(addr)
		s.m.remote.WithLabelValues("error").Inc()
		s.log.Debug("delivery to a frontend failed", "frontend", addr, "err", err)
		return false
	}
	if resp.UnknownReceiver {
		// A later process at that address: the routes are an earlier one's.
		s.m.remote.WithLabelValues("unknown_receiver").Inc()
		s.removeGone(tenant, receiver, subs)
		return false
	}
	// resp.Gone is the receiver's own business: it removes its stale routes
	// under its route locks, which a removal from here would race.
	s.m.remote.WithLabelValues("ok").Inc()
	return resp.Delivered > 0
}

// frontendService is the Frontend gRPC service other frontends call.
type frontendService struct {
	mqttpb.UnimplementedFrontendServer
	s *Server
}

func (f *frontendService) Deliver(ctx context.Context, req *mqttpb.DeliverRequest) (*mqttpb.DeliverResponse, error) {
	f.s.mu.Lock()
	closed := f.s.closed
	f.s.mu.Unlock()
	if req.Receiver != f.s.cfg.ReceiverID || req.Message == nil || closed {
		return &mqttpb.DeliverResponse{UnknownReceiver: true}, nil
	}
	n, gone := f.s.deliverLocal(req.Tenant, req.Message, req.Subscriptions, req.Seed)
	f.s.removeGone(req.Tenant, f.s.cfg.ReceiverID, gone)
	return &mqttpb.DeliverResponse{Delivered: uint32(n), Gone: gone}, nil
}

func (f *frontendService) InvalidateRoutes(ctx context.Context, req *mqttpb.InvalidateRequest) (*mqttpb.InvalidateResponse, error) {
	f.s.cache.invalidate(req.Tenant)
	return &mqttpb.InvalidateResponse{}, nil
}
