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
// lookups, so that a claim is either older than the stamp or finds it.
func (s *Server) beginConnect(c *conn) {
	s.mu.Lock()
	c.stamp = s.clock.now()
	if old := s.connecting[c.key]; old != nil {
		old.superseded.Store(true)
	}
	s.connecting[c.key] = c
	s.mu.Unlock()
}

// endConnectLocked forgets a connection's CONNECT in progress; s.mu held.
func (s *Server) endConnectLocked(c *conn) {
	if s.connecting[c.key] == c {
		delete(s.connecting, c.key)
	}
}

// claim tells the other frontends of c's CONNECT and waits (within
// claimWait) until those that are reachable closed their older
// connections of the client ID.
func (s *Server) claim(ctx context.Context, c *conn) {
	if s.cfg.Frontends == nil || skipClaims() {
		return
	}
	self, _ := receiverAddr(s.cfg.ReceiverID)
	cl := &mqttpb.Claim{Tenant: c.key.tenant, ClientId: c.key.clientID, Stamp: c.stamp, By: s.cfg.ReceiverID}
	var waits []chan struct{}
	for _, addr := range s.cfg.Frontends() {
		if addr == self {
			continue
		}
		if ch := s.claims.peer(s, addr).add(cl, s.peers.isDown(addr)); ch != nil {
			waits = append(waits, ch)
		}
	}
	if len(waits) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, claimWait)
	defer cancel()
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// onClaims closes this frontend's connections older than the claims, and
// marks older CONNECTs in progress superseded; it returns once the closed
// connections ended, or ctx ended.
func (s *Server) onClaims(ctx context.Context, claims []*mqttpb.Claim) int {
	var kicked []*conn
	s.mu.Lock()
	for _, cl := range claims {
		s.clock.observe(cl.Stamp)
		key := sessionKey{cl.Tenant, cl.ClientId}
		if c := s.sessions[key]; c != nil && stampBefore(c.stamp, s.cfg.ReceiverID, cl.Stamp, cl.By) {
			kicked = append(kicked, c)
		}
		if c := s.connecting[key]; c != nil && stampBefore(c.stamp, s.cfg.ReceiverID, cl.Stamp, cl.By) {
			c.superseded.Store(true)
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
			return len(kicked)
		case <-ctx.Done():
			return len(kicked)
		}
	}
	return len(kicked)
}

func (f *frontendService) Claim(ctx context.Context, req *mqttpb.ClaimRequest) (*mqttpb.ClaimResponse, error) {
	return &mqttpb.ClaimResponse{Closed: uint32(f.s.onClaims(ctx, req.Claims))}, nil
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
		p = &claimSender{s: s, addr: addr}
		cs.m[addr] = p
	}
	return p
}

// claimSender sends the claims for one frontend in batches, one call at a
// time, and keeps those it could not deliver to send again.
type claimSender struct {
	s    *Server
	addr string

	mu      sync.Mutex
	queue   []pendingClaim
	running bool
}

type pendingClaim struct {
	c     *mqttpb.Claim
	since time.Time
	done  chan struct{} // nil: nobody waits
}

// add queues a claim; the channel it returns is closed once the frontend
// answered it or failed to. A frontend that is down gets it later, and
// nobody waits for that.
func (p *claimSender) add(c *mqttpb.Claim, down bool) chan struct{} {
	var done chan struct{}
	if !down {
		done = make(chan struct{})
	}
	p.mu.Lock()
	p.queue = append(p.queue, pendingClaim{c: c, since: time.Now(), done: done})
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
		err := p.send(req, backoff > 100*time.Millisecond)
		if err == nil {
			s.m.claimsSent.WithLabelValues("ok").Add(float64(len(batch)))
			backoff = 100 * time.Millisecond
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
		select {
		case <-s.bg.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (p *claimSender) send(req *mqttpb.ClaimRequest, waitForReady bool) error {
	c, err := p.s.peers.reach(p.addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(p.s.bg, claimWait)
	defer cancel()
	_, err = c.Claim(ctx, req, grpc.WaitForReady(waitForReady))
	return err
}
