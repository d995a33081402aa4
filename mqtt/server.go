package mqtt

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/mqtt/fanout"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// Server is one MQTT frontend.
type Server struct {
	cfg        Config
	log        *slog.Logger
	m          *metrics
	fan        *fanout.Index
	cache      *matchCache
	matcher    *matchBatcher
	peers      peers
	routeLocks routeLocks
	owners     ownerSet
	inserts    [insertLanes]*batcher[*inboxpb.InsertItem, insertResult]
	commits    *batcher[*inboxpb.CommitRequest, commitResult]
	// routeGate, set by tests only (export_test.go), holds every message's
	// routing until the channel is closed.
	routeGate atomic.Pointer[chan struct{}]
	lookups   *batcher[*inboxpb.GetRequest, *inboxpb.Meta]

	// clock stamps CONNECTs; claims tells other frontends of them
	// (claim.go).
	clock  hlc
	claims claimSenders

	mu       sync.Mutex
	sessions map[sessionKey]*conn
	// connecting is the CONNECTs past authentication not yet registered.
	connecting map[sessionKey]*conn
	conns      map[*conn]struct{}
	listeners  []*listener.Listener
	closed     bool
	// idle waits on the sockets of parked connections (idle.go).
	idle idlePoller

	ctx    context.Context
	cancel context.CancelFunc
	// bg ends as Close begins: retries in the background give up.
	bg     context.Context
	stopBg context.CancelFunc
	// wg counts background work (stale-route removal, $SYS) and connections.
	wg sync.WaitGroup
	// started is when New made the server ($SYS uptime).
	started time.Time
	// tenants is what each tenant uses of this frontend (quota.go).
	tenants tenantUsages
}

type sessionKey struct{ tenant, clientID string }

// New returns a frontend; Start opens its listeners.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, log: cfg.Logger.With("frontend", cfg.ReceiverID), m: newMetrics(cfg.Registerer),
		fan: fanout.New(), cache: newMatchCache(cfg.MatchCacheTTL),
		sessions: map[sessionKey]*conn{}, connecting: map[sessionKey]*conn{}, conns: map[*conn]struct{}{},
		ctx: ctx, cancel: cancel, started: time.Now(),
	}
	s.peers.tls = cfg.ClusterTLS
	s.bg, s.stopBg = context.WithCancel(context.Background())
	if cfg.Inbox != nil {
		for i := range s.inserts {
			s.inserts[i] = newInsertBatcher(cfg.Inbox, s.m)
		}
		s.commits = newCommitBatcher(cfg.Inbox, s.m)
		s.lookups = newLookupBatcher(cfg.Inbox, s.m)
	}
	s.matcher = newMatchBatcher(cfg.Dist, cfg.RequestTimeout, func(n int) { s.m.matchBatch.Observe(float64(n)) })
	return s, nil
}

// RegisterService registers the Frontend gRPC service (deliveries from
// other frontends) on a gRPC server.
func (s *Server) RegisterService(g *grpc.Server) {
	mqttpb.RegisterFrontendServer(g, &frontendService{s: s})
}

// Start opens the configured listeners; on an error none stays open.
func (s *Server) Start() error {
	for _, lc := range s.cfg.Listeners {
		l, err := listener.Start(lc, s.ServeConn, s.log, s.cfg.Registerer)
		if err != nil {
			for _, o := range s.listeners {
				o.Close()
			}
			s.listeners = nil
			return err
		}
		s.listeners = append(s.listeners, l)
	}
	s.idle.start(s.log)
	if s.cfg.SysInterval > 0 {
		s.wg.Add(1)
		go s.runSys()
	}
	return nil
}

// Addrs returns the listeners' addresses, in the order configured.
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Close stops the listeners, tells MQTT 5 clients the server is shutting
// down, closes every connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	// Work retried in the background stops: claims queued for unreachable
	// frontends, detaches the inbox does not answer (tried once more).
	s.stopBg()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.kick(packet.ServerShuttingDown)
	}
	var err error
	for _, l := range s.listeners {
		err = errors.Join(err, l.Close())
	}
	s.wg.Wait()
	s.idle.stop()
	s.cancel()
	s.peers.close()
	err = errors.Join(err, s.closeEvents())
	return err
}

// ServeConn serves one client connection. Listeners call it; tests may call
// it with any net.Conn. It returns when the connection ends, or earlier
// when the connection goes idle and parks (a plain TCP connection on
// Linux): the connection then goes on without a goroutine of its own until
// it is readable again, and Close still ends and waits for it.
func (s *Server) ServeConn(nc net.Conn, info listener.ConnInfo) {
	c := newConn(s, nc, info)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	c.serve() // may return before the connection ends: see conn.finish
}

// connEnded forgets a connection that ended (conn.finish).
func (s *Server) connEnded(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// register makes c the session of its client ID, taking over (and waiting
// for the end of) a connection that holds it (MQTT-3.1.4-3). It returns
// false when a newer connection of the client ID took over meanwhile.
func (s *Server) register(c *conn) bool {
	for {
		s.mu.Lock()
		if c.superseded.Load() {
			s.endConnectLocked(c)
			s.mu.Unlock()
			return false
		}
		old := s.sessions[c.key]
		if old == nil {
			s.endConnectLocked(c)
			s.sessions[c.key] = c
			s.mu.Unlock()
			return true
		}
		s.mu.Unlock()
		old.kick(packet.SessionTakenOver)
		select {
		case <-old.done:
		case <-time.After(10 * time.Second):
			s.log.Warn("taken-over connection did not end in time", "client", c.key.clientID)
			s.mu.Lock()
			if s.sessions[c.key] == old {
				delete(s.sessions, c.key)
			}
			s.mu.Unlock()
		}
	}
}

func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	if s.sessions[c.key] == c {
		delete(s.sessions, c.key)
	}
	s.mu.Unlock()
}

func (s *Server) session(tenant, clientID string) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[sessionKey{tenant, clientID}]
}
