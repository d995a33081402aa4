// Package listener accepts MQTT client connections on one address and hands
// each to the broker as a net.Conn, whatever the transport: plain TCP, TLS,
// MQTT over WebSocket, or over WebSocket with TLS (MQTT 5.0 section 6).
//
// Invariants:
//   - Start binds before it returns, so a bad or busy address is an error at
//     once; serving then happens in goroutines the Listener owns.
//   - Each connection gets one goroutine that runs its handshakes (the PROXY
//     protocol header when the listener takes one, TLS, then the HTTP upgrade
//     for WebSocket) under a deadline and then calls the handler; a
//     connection that fails a handshake never reaches the handler.
//   - The Listener tracks every connection from accept until it is closed,
//     and Close closes those still open, so nothing it accepted outlives it.
//   - Close returns only once every goroutine the Listener started, the
//     handler calls included, has returned.
package listener

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Kind is a listener's transport.
type Kind string

// The transports.
const (
	TCP Kind = "tcp" // MQTT over plain TCP
	TLS Kind = "tls" // MQTT over TLS
	WS  Kind = "ws"  // MQTT over WebSocket
	WSS Kind = "wss" // MQTT over WebSocket over TLS
)

func (k Kind) secure() bool    { return k == TLS || k == WSS }
func (k Kind) websocket() bool { return k == WS || k == WSS }

// Defaults of Config.
const (
	DefaultPath             = "/mqtt"
	DefaultHandshakeTimeout = 10 * time.Second
)

// Config is one listener's settings. The toml names match the error
// messages of Validate.
type Config struct {
	// Kind is the transport; required.
	Kind Kind `toml:"kind"`
	// Addr is the host:port to bind; required. Port 0 picks a free port
	// (see Listener.Addr).
	Addr string `toml:"addr"`

	// CertFile and KeyFile are the PEM server certificate (chain) and key;
	// required for tls and wss, not allowed otherwise.
	CertFile string `toml:"cert-file"`
	KeyFile  string `toml:"key-file"`
	// ClientCAFile, when set, is a PEM bundle client certificates are
	// verified against; a client may still connect without one unless
	// RequireClientCert is set.
	ClientCAFile string `toml:"client-ca-file"`
	// RequireClientCert refuses clients without a verified certificate; it
	// needs ClientCAFile.
	RequireClientCert bool `toml:"require-client-cert"`

	// Path is the HTTP path of ws and wss; default DefaultPath.
	Path string `toml:"path"`

	// HandshakeTimeout bounds the TLS handshake and the WebSocket upgrade,
	// so a client that connects and stalls does not hold a goroutine and a
	// socket forever; default DefaultHandshakeTimeout. Plain TCP has no
	// handshake here: the MQTT CONNECT timeout is the broker's.
	HandshakeTimeout time.Duration `toml:"handshake-timeout"`

	// ProxyProtocol makes every connection start with a PROXY protocol
	// header, version 1 or 2 (proxyproto.go), sent by a load balancer: the
	// client address it names becomes the conn's RemoteAddr and
	// ConnInfo.Remote. A connection without a valid header is closed
	// before it reaches the handler (and counted). The header is read
	// under HandshakeTimeout. Default false: a PROXY header is then just
	// a malformed MQTT packet.
	ProxyProtocol bool `toml:"proxy-protocol"`

	// Tenant is the tenant of this listener's clients when authentication
	// names none; "" is the broker's default tenant. The listener only
	// passes it on (ConnInfo.Tenant); the broker validates it.
	Tenant string `toml:"tenant"`
}

// Validate checks the config, naming the bad field.
func (c Config) Validate() error {
	switch c.Kind {
	case TCP, TLS, WS, WSS:
	case "":
		return errors.New("listener: kind is required (tcp, tls, ws or wss)")
	default:
		return fmt.Errorf("listener: unknown kind %q (want tcp, tls, ws or wss)", c.Kind)
	}
	p := "listener " + string(c.Kind)
	if c.Addr == "" {
		return fmt.Errorf("%s: addr is required", p)
	}
	_, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("%s: addr %q: %w", p, c.Addr, err)
	}
	if port == "" {
		return fmt.Errorf("%s: addr %q has no port", p, c.Addr)
	}
	if c.Kind.secure() {
		if c.CertFile == "" {
			return fmt.Errorf("%s: cert-file is required", p)
		}
		if c.KeyFile == "" {
			return fmt.Errorf("%s: key-file is required", p)
		}
		if c.RequireClientCert && c.ClientCAFile == "" {
			return fmt.Errorf("%s: require-client-cert needs client-ca-file", p)
		}
	} else if c.CertFile != "" || c.KeyFile != "" || c.ClientCAFile != "" || c.RequireClientCert {
		// Certificates on a plain listener are almost surely a kind typo;
		// serving plaintext where TLS was meant is the failure to avoid.
		return fmt.Errorf("%s: cert-file, key-file, client-ca-file and require-client-cert apply only to tls and wss", p)
	}
	if c.Kind.websocket() {
		if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
			return fmt.Errorf("%s: path %q must begin with /", p, c.Path)
		}
	} else if c.Path != "" {
		return fmt.Errorf("%s: path applies only to ws and wss", p)
	}
	if c.HandshakeTimeout < 0 {
		return fmt.Errorf("%s: handshake-timeout must not be negative", p)
	}
	return nil
}

// ConnInfo describes an accepted connection.
type ConnInfo struct {
	Kind Kind
	// Remote is the client's address: the TCP peer, or with ProxyProtocol
	// the client address of the PROXY header (the peer when the header
	// carries none, as health checks send).
	Remote net.Addr
	// Proxy is the TCP peer when ProxyProtocol is on (the load balancer),
	// nil otherwise.
	Proxy net.Addr
	// Tenant is Config.Tenant.
	Tenant string
	// TLS is the completed handshake of tls and wss connections, nil for
	// plain ones. Its PeerCertificates hold a verified client certificate,
	// if the client sent one.
	TLS *tls.ConnectionState
}

// Handler serves one connection, in a goroutine of its own.
//
// The handler owns conn and should Close it when done: the Listener counts
// the connection as open until then, and does not close it when the handler
// returns, so a handler may pass conn on to other goroutines. The contract
// with Listener.Close: Close closes every conn still open, so a handler
// blocked in Read or Write gets an error, and then waits for the handler to
// return; a handler must therefore return once its conn is closed and must
// not call Close itself. Goroutines a handler starts are its own to stop.
type Handler func(conn net.Conn, info ConnInfo)

// Listener accepts connections of one Config until Close.
type Listener struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	m       *metrics
	tls     *tls.Config // nil for tcp and ws
	ln      net.Listener

	// ctx is cancelled by Close; it bounds the WebSocket connections.
	ctx    context.Context
	cancel context.CancelFunc

	acceptDone chan struct{}
	wg         sync.WaitGroup // the accept loop and one per connection

	mu     sync.Mutex
	closed bool
	// conns maps each accepted TCP connection still open to the function
	// that closes it at once: the raw socket during its handshakes, then the
	// conn handed to the handler.
	conns map[net.Conn]func()
}

// Start binds cfg.Addr and serves it in its own goroutines, calling handler
// once per connection. logger nil logs nothing; reg nil registers no
// metrics.
func Start(cfg Config, handler Handler, logger *slog.Logger, reg prometheus.Registerer) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := "listener " + string(cfg.Kind)
	if handler == nil {
		return nil, fmt.Errorf("%s: handler is required", p)
	}
	if cfg.Kind.websocket() && cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg, cfg.Kind)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	var tlsCfg *tls.Config
	if cfg.Kind.secure() {
		if tlsCfg, err = loadTLS(cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	// No TCP keep-alive: MQTT has its own (the keep-alive timer closes a
	// silent client), and Go's default set four socket options on every
	// accepted connection (of about a dozen syscalls per connect).
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("%s: bind %s: %w", p, cfg.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		cfg:        cfg,
		handler:    handler,
		log:        logger.With("listener", string(cfg.Kind), "addr", ln.Addr().String()),
		m:          m,
		tls:        tlsCfg,
		ln:         ln,
		ctx:        ctx,
		cancel:     cancel,
		acceptDone: make(chan struct{}),
		conns:      map[net.Conn]func(){},
	}
	l.wg.Add(1)
	go l.acceptLoop()
	l.log.Info("mqtt listener started")
	return l, nil
}

func loadTLS(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load cert-file %s and key-file %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	t := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}
	if cfg.Kind == WSS {
		// The upgrade is an HTTP/1.1 request; never let ALPN pick h2.
		t.NextProtos = []string{"http/1.1"}
	}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client-ca-file %s: no PEM certificate found", cfg.ClientCAFile)
		}
		t.ClientCAs = pool
		t.ClientAuth = tls.VerifyClientCertIfGiven
		if cfg.RequireClientCert {
			t.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return t, nil
}

// Addr is the bound address (with the real port when Addr asked for 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting, closes every connection still open (the handlers'
// conns and those still in a handshake), and waits for the Listener's
// goroutines, handler calls included, to return. See Handler for the
// contract this puts on handlers. Later calls wait the same way and return
// nil.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.wg.Wait()
		return nil
	}
	l.closed = true
	l.mu.Unlock()

	l.cancel()
	err := l.ln.Close()
	// Once the accept loop is gone no connection can be tracked any more,
	// so the snapshot below holds every one still open.
	<-l.acceptDone
	l.mu.Lock()
	closers := make([]func(), 0, len(l.conns))
	for _, closeNow := range l.conns {
		closers = append(closers, closeNow)
	}
	l.mu.Unlock()
	for _, closeNow := range closers {
		closeNow()
	}
	l.wg.Wait()
	l.log.Info("mqtt listener stopped", "closed_conns", len(closers))
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("listener %s %s: close: %w", l.cfg.Kind, l.ln.Addr(), err)
	}
	return nil
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	defer close(l.acceptDone)
	var backoff time.Duration
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: the condition may clear,
			// so keep the listener but do not spin on it.
			l.m.acceptErrors.Inc()
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("mqtt listener: accept failed; retrying", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		if !l.track(raw, func() { _ = raw.Close() }) {
			_ = raw.Close()
			return
		}
		l.wg.Add(1)
		go l.serveConn(raw)
	}
}

// track records an open connection with the function that closes it now;
// false: the Listener is closed, so the caller must close it instead.
func (l *Listener) track(raw net.Conn, closeNow func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[raw] = closeNow
	return true
}

func (l *Listener) untrack(raw net.Conn) {
	l.mu.Lock()
	delete(l.conns, raw)
	l.mu.Unlock()
}

func (l *Listener) serveConn(raw net.Conn) {
	defer l.wg.Done()
	conn, info, err := l.handshake(raw)
	if err != nil {
		// A failure Close caused is no client's error.
		if l.ctx.Err() == nil {
			l.m.acceptErrors.Inc()
			if errors.Is(err, errProxyHeader) {
				l.m.proxyErrors.Inc()
			}
			// info.Remote: the client's, once a PROXY header named it.
			l.log.Debug("mqtt listener: handshake failed", "remote", info.Remote.String(), "err", err)
		}
		l.untrack(raw)
		_ = raw.Close()
		return
	}
	if !l.track(raw, conn.closeNow) {
		conn.abort() // never handed out, so not counted open
		return
	}
	l.m.accepted.Inc()
	l.m.open.Inc()
	l.handler(conn, info)
}

// errProxyHeader marks handshake errors of the PROXY header.
var errProxyHeader = errors.New("bad PROXY protocol header")

// handshake reads the PROXY header and runs the TLS handshake and the
// WebSocket upgrade the kind needs, under the handshake deadline.
func (l *Listener) handshake(raw net.Conn) (*trackedConn, ConnInfo, error) {
	info := ConnInfo{Kind: l.cfg.Kind, Remote: raw.RemoteAddr(), Tenant: l.cfg.Tenant}
	tc := &trackedConn{Conn: raw, l: l, raw: raw}
	if l.tls == nil && !l.cfg.Kind.websocket() && !l.cfg.ProxyProtocol {
		return tc, info, nil
	}
	if err := raw.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout)); err != nil {
		return nil, info, fmt.Errorf("set handshake deadline: %w", err)
	}
	if l.cfg.ProxyProtocol {
		h, err := readProxyHeader(raw)
		if err != nil {
			return nil, info, fmt.Errorf("%w: %w", errProxyHeader, err)
		}
		info.Proxy = raw.RemoteAddr()
		if h.Source != nil {
			info.Remote, tc.remote = h.Source, h.Source
		}
	}
	if l.tls != nil {
		c := tls.Server(raw, l.tls)
		if err := c.Handshake(); err != nil {
			return nil, info, fmt.Errorf("tls handshake: %w", err)
		}
		st := c.ConnectionState()
		info.TLS = &st
		tc.Conn = c
	}
	if l.cfg.Kind.websocket() {
		wc, nc, err := l.upgrade(tc.Conn)
		if err != nil {
			return nil, info, err
		}
		tc.Conn, tc.ws = nc, wc
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		tc.abort()
		return nil, info, fmt.Errorf("clear handshake deadline: %w", err)
	}
	return tc, info, nil
}
