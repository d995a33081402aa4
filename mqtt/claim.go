package mqtt

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// One connection per client ID, cluster-wide (MQTT-3.1.4-3), for every
// kind of session: each CONNECT takes a stamp from this frontend's hybrid
// logical clock and tells every other frontend (a Claim); a frontend closes
// its connections of that client ID whose stamps are older. The newest
// stamp wins, so of two CONNECTs that race on two frontends exactly one
// connection stays. A frontend's clock moves past every stamp it hears of,
// and a CONNECT is answered only once the reachable frontends had its
// claim, so a CONNECT that begins after another's CONNACK always carries
// the newer stamp, whatever the wall clocks say. No store is read or
// written: a persistent session's owner is still the inbox's to name
// (attach), and the claim only closes connections sooner. A frontend that
// does not answer is not waited for; its claims are sent again in the
// background until it answers or has been gone for DeadFrontendAfter (a
// paused frontend closes the connection it kept once it runs again).
//
// A client ID in use belongs to its user (issue 14): a CONNECT of another
// authenticated user (or anonymous against a user) does not close a live
// connection, on this frontend (beginConnect) or another (a claim is
// refused), and is refused itself (CONNACK 0x87 / 5). A refusal that comes
// after the CONNECT stopped waiting closes the newer connection instead.
// The inbox enforces the same for persistent sessions (Meta.user).

// hlc is a hybrid logical clock in nanoseconds: the wall clock, or one past
// the newest stamp seen when that is ahead.
type hlc struct{ last atomic.Int64 }

func (h *hlc) now() int64 {
	for {
		last, wall := h.last.Load(), time.Now().UnixNano()
		next := max(wall, last+1)
		if h.last.CompareAndSwap(last, next) {
			return next
		}
	}
}

func (h *hlc) observe(t int64) {
	for {
		last := h.last.Load()
		if t <= last || h.last.CompareAndSwap(last, t) {
			return
		}
	}
}

// stampBefore orders claims: by stamp, then by the claiming frontend.
func stampBefore(at int64, by string, at2 int64, by2 string) bool {
	return at < at2 || (at == at2 && by < by2)
}

// claimWait bounds how long a CONNECT waits for the other frontends to
// close the older connections of its client ID, and a Claim call.
const claimWait = time.Second

// beginConnect stamps a connection that is about to be accepted and makes
// it known to claims (connecting), under the same lock as the claims'
// lookups, so that a claim is either older than the stamp or finds it. It
// returns false, and c is not known, when a connection of the client ID of
// another user is live or connecting here.
func (s *Server) beginConnect(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.heldByOtherLocked(c.key, c.id.Username) {
		return false
	}
	old := s.connecting[c.key]
	c.stamp = s.clock.now()
	if old != nil {
		old.superseded.Store(true)
	}
	s.connecting[c.key] = c
	return true
}

// endConnectLocked forgets a connection's CONNECT in progress; s.mu held.
func (s *Server) endConnectLocked(c *conn) {
	if s.connecting[c.key] == c {
		delete(s.connecting, c.key)
	}
}

// heldByOtherLocked says whether a connection of key of another user than
// user is live or connecting here; s.mu held.
func (s *Server) heldByOtherLocked(key sessionKey, user string) bool {
	live, connecting := s.sessions[key], s.connecting[key]
	return live != nil && live.id.Username != user || connecting != nil && connecting.id.Username != user
}

// The states of a connection's claim (conn.claimState).
const (
	claimWaiting int32 = iota // the CONNECT waits for the answers
	claimWaited               // it went on: a refusal now closes the connection
	claimRefused              // refused while the CONNECT waited
)

// claim tells the other frontends of c's CONNECT and waits (within
// claimWait) until those that are reachable closed their older
// connections of the client ID. It returns false when a frontend refused
// the claim: it holds the client ID for another user.
func (s *Server) claim(ctx context.Context, c *conn) bool {
	if s.cfg.Frontends == nil || skipClaims() {
		return true
	}
	self, _ := receiverAddr(s.cfg.ReceiverID)
	cl := &mqttpb.Claim{Tenant: c.key.tenant, ClientId: c.key.clientID, Stamp: c.stamp, By: s.cfg.ReceiverID, User: c.id.Username}
	var waits []chan struct{}
	for _, addr := range s.frontends() {
		if addr == self {
			continue
		}
		if ch := s.claims.peer(s, addr).add(cl, c, s.peers.isDown(addr)); ch != nil {
			waits = append(waits, ch)
		}
	}
	if len(waits) > 0 {
		ctx, cancel := context.WithTimeout(ctx, claimWait)
		defer cancel()
	wait:
		for _, ch := range waits {
			select {
			case <-ch:
			case <-ctx.Done():
				break wait
			}
		}
	}
	return c.claimState.CompareAndSwap(claimWaiting, claimWaited)
}

// claimRefused is told that a frontend refused c's claim.
func (s *Server) claimRefused(c *conn) {
	s.m.claimsRefused.Inc()
	if c.claimState.CompareAndSwap(claimWaiting, claimRefused) {
		return // the CONNECT is refused
	}
	// The CONNECT went on without the answer: the newer connection goes.
	s.mu.Lock()
	c.superseded.Store(true)
	registered := s.sessions[c.key] == c
	s.mu.Unlock()
	if registered {
		go c.kick(packet.NotAuthorized)
	}
}

// onClaims closes this frontend's connections older than the claims, and
// marks older CONNECTs in progress superseded; it returns once the closed
// connections ended, or ctx ended.
// A claim of another user than a live or connecting connection's is
// refused (its index is in refused), and closes nothing.
func (s *Server) onClaims(ctx context.Context, claims []*mqttpb.Claim) (closed int, refused []uint32) {
	s.heardFrom(claims)
	var kicked []*conn
	s.mu.Lock()
	for i, cl := range claims {
		s.clock.observe(cl.Stamp)
		key := sessionKey{cl.Tenant, cl.ClientId}
		if s.heldByOtherLocked(key, cl.User) {
			refused = append(refused, uint32(i))
			continue
		}
		live, connecting := s.sessions[key], s.connecting[key]
		if live != nil && stampBefore(live.stamp, s.cfg.ReceiverID, cl.Stamp, cl.By) {
			kicked = append(kicked, live)
		}
		if connecting != nil && stampBefore(connecting.stamp, s.cfg.ReceiverID, cl.Stamp, cl.By) {
			connecting.superseded.Store(true)
		}
	}
	s.mu.Unlock()
	for _, c := range kicked {
		s.m.claimKicks.Inc()
		c.kick(packet.SessionTakenOver) // MQTT-3.1.4-3
	}
	// Within half the sender's wait, so that a slow detach does not fail
	// the call (which would mark this frontend down).
	wait := time.NewTimer(claimWait / 2)
	defer wait.Stop()
	for _, c := range kicked {
		select {
		case <-c.done:
		case <-wait.C:
			return len(kicked), refused
		case <-ctx.Done():
			return len(kicked), refused
		}
	}
	return len(kicked), refused
}

// heardFrom takes the senders of claims as alive: a frontend that failed
// (killed, then restarted) is waited for again by this frontend's CONNECTs,
// and claims queued for it while it was away are sent now rather than after
// the retry backoff (jepsen mqtt-takeover × kill-frontend: a connection on
// the restarted frontend stayed open 852 ms after a CONNECT elsewhere, which
// had taken the frontend as down and not waited).
func (s *Server) heardFrom(claims []*mqttpb.Claim) {
	var last string
	for _, cl := range claims {
		if cl.By == last {
			continue
		}
		last = cl.By
		addr, ok := receiverAddr(cl.By)
		if !ok || cl.By == s.cfg.ReceiverID {
			continue
		}
		s.peers.alive(addr)
		s.claims.wake(addr)
	}
}

func (f *frontendService) Claim(ctx context.Context, req *mqttpb.ClaimRequest) (*mqttpb.ClaimResponse, error) {
	closed, refused := f.s.onClaims(ctx, req.Claims)
	return &mqttpb.ClaimResponse{Closed: uint32(closed), Refused: refused}, nil
}

// claimSenders holds a sender per other frontend.
type claimSenders struct {
	mu sync.Mutex
	m  map[string]*claimSender
}

func (cs *claimSenders) peer(s *Server, addr string) *claimSender {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	p := cs.m[addr]
	if p == nil {
		if cs.m == nil {
			cs.m = map[string]*claimSender{}
		}
		p = &claimSender{s: s, addr: addr, wake: make(chan struct{}, 1)}
		cs.m[addr] = p
	}
	return p
}

// wake ends the retry backoff of the sender for addr, if there is one.
func (cs *claimSenders) wake(addr string) {
	cs.mu.Lock()
	p := cs.m[addr]
	cs.mu.Unlock()
	if p != nil {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// claimSender sends the claims for one frontend in batches, one call at a
// time, and keeps those it could not deliver to send again.
type claimSender struct {
	s    *Server
	addr string
	// wake ends a retry backoff: the frontend was heard from.
	wake chan struct{}

	mu      sync.Mutex
	queue   []pendingClaim
	running bool
}

type pendingClaim struct {
	c     *mqttpb.Claim
	from  *conn // the claiming connection, told of a refusal
	since time.Time
	done  chan struct{} // nil: nobody waits
}

// add queues a claim; the channel it returns is closed once the frontend
// answered it or failed to. A frontend that is down gets it later, and
// nobody waits for that.
func (p *claimSender) add(c *mqttpb.Claim, from *conn, down bool) chan struct{} {
	var done chan struct{}
	if !down {
		done = make(chan struct{})
	}
	p.mu.Lock()
	p.queue = append(p.queue, pendingClaim{c: c, from: from, since: time.Now(), done: done})
	start := !p.running
	p.running = true
	p.mu.Unlock()
	if start {
		p.s.wg.Add(1)
		go p.run()
	}
	return done
}

// maxClaimBatch bounds the claims of one call.
const maxClaimBatch = 4096

func (p *claimSender) run() {
	defer p.s.wg.Done()
	s := p.s
	backoff := 100 * time.Millisecond
	for {
		p.mu.Lock()
		// Claims older than DeadFrontendAfter are dropped: their frontend
		// is gone, or restarted without the connections they were for.
		keep := p.queue[:0]
		for _, pc := range p.queue {
			if time.Since(pc.since) < s.cfg.DeadFrontendAfter {
				keep = append(keep, pc)
			} else if pc.done != nil {
				close(pc.done)
			}
		}
		clear(p.queue[len(keep):])
		p.queue = keep
		if len(p.queue) == 0 || s.bg.Err() != nil {
			for _, pc := range p.queue {
				if pc.done != nil {
					close(pc.done)
				}
			}
			p.queue, p.running = nil, false
			p.mu.Unlock()
			return
		}
		batch := p.queue[:min(len(p.queue), maxClaimBatch)]
		p.queue = p.queue[len(batch):]
		p.mu.Unlock()

		req := &mqttpb.ClaimRequest{Claims: make([]*mqttpb.Claim, len(batch))}
		for i, pc := range batch {
			req.Claims[i] = pc.c
		}
		// The first try of a batch fails fast, so that a frontend that
		// died does not hold CONNECTs up for the call's timeout; tries
		// after a failure wait for the connection to be ready (a paused or
		// restarting frontend is reached once it runs).
		resp, err := p.send(req, backoff > 100*time.Millisecond)
		if err == nil {
			s.m.claimsSent.WithLabelValues("ok").Add(float64(len(batch)))
			backoff = 100 * time.Millisecond
			for _, i := range resp.Refused {
				if int(i) < len(batch) {
					s.claimRefused(batch[i].from)
				}
			}
			for _, pc := range batch {
				if pc.done != nil {
					close(pc.done)
				}
			}
			continue
		}
		s.m.claimsSent.WithLabelValues("retry").Add(float64(len(batch)))
		s.peers.failed(p.addr)
		s.log.Debug("claims not delivered; sending again", "frontend", p.addr, "claims", len(batch), "err", err)
		// Nobody waits for a frontend that failed; the claims go back
		// to the front of the queue, to be sent again.
		p.mu.Lock()
		for i := range batch {
			if batch[i].done != nil {
				close(batch[i].done)
				batch[i].done = nil
			}
		}
		p.queue = append(append(make([]pendingClaim, 0, len(batch)+len(p.queue)), batch...), p.queue...)
		p.mu.Unlock()
		t := time.NewTimer(backoff)
		select {
		case <-s.bg.Done():
		case <-t.C:
		case <-p.wake:
		}
		t.Stop()
		backoff = min(2*backoff, time.Second)
	}
}

func (p *claimSender) send(req *mqttpb.ClaimRequest, waitForReady bool) (*mqttpb.ClaimResponse, error) {
	c, err := p.s.peers.reach(p.addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(p.s.bg, claimWait)
	defer cancel()
	return c.Claim(ctx, req, grpc.WaitForReady(waitForReady))
}
