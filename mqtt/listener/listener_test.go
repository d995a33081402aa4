package listener

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var kinds = []Kind{TCP, TLS, WS, WSS}

func start(t *testing.T, cfg Config, h Handler, reg prometheus.Registerer) *Listener {
	t.Helper()
	l, err := Start(cfg, h, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestEcho(t *testing.T) {
	p := newPKI(t)
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e := newEcho()
			l := start(t, p.config(kind), e.handle, reg)
			c := dial(t, l, p.clientTLS(false))
			e.waitCall(t)

			small, big := packet(10, 'a'), packet(200_000, 'b')
			if _, err := c.Write(small); err != nil {
				t.Fatal(err)
			}
			expectEcho(t, c, small)
			// Two packets in one write: one segment, record or frame.
			if _, err := c.Write(append(append([]byte(nil), small...), big...)); err != nil {
				t.Fatal(err)
			}
			expectEcho(t, c, small, big)

			info := e.infos[0]
			if info.Kind != kind || info.Remote == nil || !strings.HasPrefix(info.Remote.String(), "127.0.0.1:") {
				t.Errorf("info = %+v", info)
			}
			if (info.TLS != nil) != kind.secure() {
				t.Errorf("info.TLS = %v for %s", info.TLS, kind)
			}
			if got := metric(t, reg, "bifrost_mqtt_listener_connections_accepted_total", kind); got != 1 {
				t.Errorf("accepted = %v, want 1", got)
			}
			if got := metric(t, reg, "bifrost_mqtt_listener_connections_open", kind); got != 1 {
				t.Errorf("open = %v, want 1", got)
			}
			// The client leaving ends the handler, which closes its conn.
			_ = c.Close()
			eventually(t, "handler to close its conn", func() bool {
				return metric(t, reg, "bifrost_mqtt_listener_connections_open", kind) == 0
			})
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A packet split over WebSocket frames of one message, over several
// messages, and several packets in one frame all arrive as the same byte
// stream (MQTT-6.0.0-2).
func TestWebSocketFraming(t *testing.T) {
	p := newPKI(t)
	for _, kind := range []Kind{WS, WSS} {
		t.Run(string(kind), func(t *testing.T) {
			e := newEcho()
			l := start(t, p.config(kind), e.handle, nil)
			wc := dialWS(t, l, p.clientTLS(false), []string{"mqtt"})
			defer wc.CloseNow()
			if wc.Subprotocol() != "mqtt" {
				t.Fatalf("subprotocol %q, want mqtt", wc.Subprotocol())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			nc := websocket.NetConn(ctx, wc, websocket.MessageBinary)

			// One message in three frames.
			pkt := packet(100, 'x')
			w, err := wc.Writer(ctx, websocket.MessageBinary)
			if err != nil {
				t.Fatal(err)
			}
			for _, part := range [][]byte{pkt[:1], pkt[1:40], pkt[40:]} {
				if _, err := w.Write(part); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			expectEcho(t, nc, pkt)

			// Three messages.
			pkt2 := packet(70_000, 'y')
			for _, part := range [][]byte{pkt2[:2], pkt2[2:9], pkt2[9:]} {
				if err := wc.Write(ctx, websocket.MessageBinary, part); err != nil {
					t.Fatal(err)
				}
			}
			expectEcho(t, nc, pkt2)

			// Three packets in one frame.
			a, b, c := packet(1, '1'), packet(2, '2'), packet(3, '3')
			if err := wc.Write(ctx, websocket.MessageBinary, bytes.Join([][]byte{a, b, c}, nil)); err != nil {
				t.Fatal(err)
			}
			expectEcho(t, nc, a, b, c)

			got := e.received()
			want := [][]byte{pkt, pkt2, a, b, c}
			if len(got) != len(want) {
				t.Fatalf("handler read %d packets, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Errorf("packet %d arrived as %d bytes, want %d", i, len(got[i]), len(want[i]))
				}
			}
		})
	}
}

func TestWebSocketText(t *testing.T) {
	e := newEcho()
	l := start(t, Config{Kind: WS, Addr: "127.0.0.1:0"}, e.handle, nil)
	wc := dialWS(t, l, nil, []string{"mqtt"})
	defer wc.CloseNow()
	e.waitCall(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wc.Write(ctx, websocket.MessageText, packet(1, 'x')); err != nil {
		t.Fatal(err)
	}
	// The server closes with 1003 (MQTT-6.0.0-1); the handler sees an error.
	_, _, err := wc.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusUnsupportedData {
		t.Fatalf("read after text message: %v (status %v), want close 1003", err, got)
	}
	eventually(t, "handler to return", func() bool { return e.running.Load() == 0 })
}

func TestWebSocketRefusals(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEcho()
	l := start(t, Config{Kind: WS, Addr: "127.0.0.1:0", Path: "/ws"}, e.handle, reg)
	client := httpClient(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	for _, tc := range []struct {
		name   string
		path   string
		protos []string
		status int
	}{
		{"other path", "/mqtt", []string{"mqtt"}, http.StatusNotFound},
		{"no subprotocol", "/ws", nil, http.StatusBadRequest},
		{"other subprotocol", "/ws", []string{"chat"}, http.StatusBadRequest},
	} {
		_, resp, err := websocket.Dial(ctx, wsURL(l, tc.path), &websocket.DialOptions{HTTPClient: client, Subprotocols: tc.protos})
		if err == nil {
			t.Fatalf("%s: dial succeeded", tc.name)
		}
		if resp == nil || resp.StatusCode != tc.status {
			t.Fatalf("%s: response %v (err %v), want status %d", tc.name, resp, err, tc.status)
		}
	}
	// A plain GET of the path is no upgrade.
	resp, err := client.Get("http://" + l.Addr().String() + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.StatusCode < 400 {
		t.Fatalf("plain GET: %d %s", resp.StatusCode, body)
	}
	// The refusal is sent before it is counted.
	eventually(t, "4 accept errors", func() bool {
		return metric(t, reg, "bifrost_mqtt_listener_accept_errors_total", WS) == 4
	})
	if n := e.calls(); n != 0 {
		t.Fatalf("refused upgrades reached the handler %d times", n)
	}

	// The legacy MQTT 3.1 subprotocol is accepted; "mqtt" wins when both
	// are offered.
	for _, tc := range []struct{ offer, want string }{{"mqttv3.1", "mqttv3.1"}, {"mqttv3.1,mqtt", "mqtt"}} {
		wc, _, err := websocket.Dial(ctx, wsURL(l, "/ws"), &websocket.DialOptions{
			HTTPClient: client, Subprotocols: strings.Split(tc.offer, ","),
		})
		if err != nil {
			t.Fatalf("offer %s: %v", tc.offer, err)
		}
		if wc.Subprotocol() != tc.want {
			t.Errorf("offer %s: selected %q, want %q", tc.offer, wc.Subprotocol(), tc.want)
		}
		_ = wc.CloseNow()
	}
}

func TestClientCertificates(t *testing.T) {
	p := newPKI(t)
	for _, kind := range []Kind{TLS, WSS} {
		t.Run(string(kind), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e := newEcho()
			cfg := p.config(kind)
			cfg.ClientCAFile, cfg.RequireClientCert = p.caFile, true
			l := start(t, cfg, e.handle, reg)

			// Without a certificate: refused, and the handler never runs.
			// (With TLS 1.3 the client's handshake completes before the
			// server checks, so the refusal shows on the first read.)
			refused := false
			if kind == TLS {
				c, err := tls.Dial("tcp", l.Addr().String(), p.clientTLS(false))
				if err != nil {
					refused = true
				} else {
					_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
					_, err = c.Read(make([]byte, 1))
					refused = err != nil && !isTimeout(err)
					_ = c.Close()
				}
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _, err := websocket.Dial(ctx, wsURL(l, "/mqtt"), &websocket.DialOptions{
					HTTPClient: httpClient(t, p.clientTLS(false)), Subprotocols: []string{"mqtt"},
				})
				cancel()
				refused = err != nil
			}
			if !refused {
				t.Fatal("client without a certificate was not refused")
			}
			eventually(t, "accept error count", func() bool {
				return metric(t, reg, "bifrost_mqtt_listener_accept_errors_total", kind) == 1
			})

			// With one: served, and the handler sees the verified chain.
			c := dial(t, l, p.clientTLS(true))
			defer c.Close()
			e.waitCall(t)
			pkt := packet(5, 'c')
			if _, err := c.Write(pkt); err != nil {
				t.Fatal(err)
			}
			expectEcho(t, c, pkt)
			info := e.infos[0]
			if info.TLS == nil || len(info.TLS.PeerCertificates) == 0 || info.TLS.PeerCertificates[0].Subject.CommonName != "client-1" {
				t.Fatalf("handler's TLS state lacks the client certificate: %+v", info.TLS)
			}
			if n := e.calls(); n != 1 {
				t.Fatalf("handler called %d times, want 1", n)
			}
		})
	}
}

func TestOptionalClientCertificate(t *testing.T) {
	p := newPKI(t)
	e := newEcho()
	cfg := p.config(TLS)
	cfg.ClientCAFile = p.caFile
	l := start(t, cfg, e.handle, nil)
	c := dial(t, l, p.clientTLS(false))
	defer c.Close()
	e.waitCall(t)
	pkt := packet(3, 'o')
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	expectEcho(t, c, pkt)
	if n := len(e.infos[0].TLS.PeerCertificates); n != 0 {
		t.Fatalf("%d peer certificates, want none", n)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A client that connects and says nothing is dropped after the handshake
// timeout, without reaching the handler.
func TestHandshakeTimeout(t *testing.T) {
	p := newPKI(t)
	for _, kind := range []Kind{TLS, WS} {
		t.Run(string(kind), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e := newEcho()
			cfg := p.config(kind)
			cfg.HandshakeTimeout = 100 * time.Millisecond
			l := start(t, cfg, e.handle, reg)
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Fatalf("read = %v, want the server to close", err)
			}
			if got := metric(t, reg, "bifrost_mqtt_listener_accept_errors_total", kind); got != 1 {
				t.Errorf("accept errors = %v, want 1", got)
			}
			if n := e.calls(); n != 0 {
				t.Errorf("handler called %d times", n)
			}
		})
	}
}

func TestBadConfig(t *testing.T) {
	p := newPKI(t)
	h := func(net.Conn, ConnInfo) {}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no kind", Config{Addr: "127.0.0.1:0"}, "listener: kind is required"},
		{"unknown kind", Config{Kind: "quic", Addr: "127.0.0.1:0"}, `listener: unknown kind "quic"`},
		{"no addr", Config{Kind: TCP}, "listener tcp: addr is required"},
		{"addr without port", Config{Kind: TCP, Addr: "127.0.0.1"}, `listener tcp: addr "127.0.0.1"`},
		{"addr empty port", Config{Kind: TCP, Addr: "127.0.0.1:"}, `listener tcp: addr "127.0.0.1:" has no port`},
		{"missing cert", Config{Kind: TLS, Addr: "127.0.0.1:0", KeyFile: p.keyFile}, "listener tls: cert-file is required"},
		{"missing key", Config{Kind: WSS, Addr: "127.0.0.1:0", CertFile: p.certFile}, "listener wss: key-file is required"},
		{"require without CA", Config{Kind: TLS, Addr: "127.0.0.1:0", CertFile: p.certFile, KeyFile: p.keyFile, RequireClientCert: true}, "listener tls: require-client-cert needs client-ca-file"},
		{"cert on tcp", Config{Kind: TCP, Addr: "127.0.0.1:0", CertFile: p.certFile}, "listener tcp: cert-file, key-file"},
		{"path on tls", Config{Kind: TLS, Addr: "127.0.0.1:0", CertFile: p.certFile, KeyFile: p.keyFile, Path: "/mqtt"}, "listener tls: path applies only to ws and wss"},
		{"relative path", Config{Kind: WS, Addr: "127.0.0.1:0", Path: "mqtt"}, `listener ws: path "mqtt" must begin with /`},
		{"negative timeout", Config{Kind: WS, Addr: "127.0.0.1:0", HandshakeTimeout: -1}, "listener ws: handshake-timeout must not be negative"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
		if _, err := Start(tc.cfg, h, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Start() = %v, want %q", tc.name, err, tc.want)
		}
	}

	// Errors only Start can find: files and the bind.
	missing := p.config(TLS)
	missing.CertFile = p.certFile + ".missing"
	if _, err := Start(missing, h, nil, nil); err == nil || !strings.Contains(err.Error(), missing.CertFile) {
		t.Errorf("missing cert file: %v", err)
	}
	badCA := p.config(WSS)
	badCA.ClientCAFile = p.keyFile // PEM, but no certificate
	if _, err := Start(badCA, h, nil, nil); err == nil || !strings.Contains(err.Error(), "client-ca-file") {
		t.Errorf("bad client CA file: %v", err)
	}
	if _, err := Start(Config{Kind: TCP, Addr: "127.0.0.1:0"}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "handler is required") {
		t.Errorf("nil handler: %v", err)
	}
	l := start(t, Config{Kind: TCP, Addr: "127.0.0.1:0"}, h, nil)
	busy := l.Addr().String()
	if _, err := Start(Config{Kind: WS, Addr: busy}, h, nil, nil); err == nil || !strings.Contains(err.Error(), "listener ws: bind "+busy) {
		t.Errorf("busy address: %v", err)
	}
	if _, err := Start(Config{Kind: TCP, Addr: "127.0.0.1:99999"}, h, nil, nil); err == nil || !strings.Contains(err.Error(), "127.0.0.1:99999") {
		t.Errorf("bad port: %v", err)
	}
}

// Listeners on one registry share the vectors.
func TestMetricsRegisteredOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEcho()
	a := start(t, Config{Kind: TCP, Addr: "127.0.0.1:0"}, e.handle, reg)
	b := start(t, Config{Kind: TCP, Addr: "127.0.0.1:0"}, e.handle, reg)
	start(t, Config{Kind: WS, Addr: "127.0.0.1:0"}, e.handle, reg)
	for _, l := range []*Listener{a, b} {
		c := dial(t, l, nil)
		e.waitCall(t)
		defer c.Close()
	}
	if got := metric(t, reg, "bifrost_mqtt_listener_connections_accepted_total", TCP); got != 2 {
		t.Fatalf("accepted = %v, want 2", got)
	}
	if got := metric(t, reg, "bifrost_mqtt_listener_connections_open", TCP); got != 2 {
		t.Fatalf("open = %v, want 2", got)
	}
}

// Close closes every open conn, so handlers blocked in Read return, and
// waits for them; no goroutine is left behind.
func TestCloseClosesConns(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := newPKI(t)
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e := newEcho()
			l, err := Start(p.config(kind), e.handle, nil, reg)
			if err != nil {
				t.Fatal(err)
			}
			var clients []net.Conn
			for range 3 {
				c := dial(t, l, p.clientTLS(false))
				defer c.Close()
				clients = append(clients, c)
				e.waitCall(t)
			}
			// One more connection stuck before its handshake ends.
			stuck, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer stuck.Close()

			done := make(chan error, 1)
			go func() { done <- l.Close() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not return")
			}
			if n := e.running.Load(); n != 0 {
				t.Fatalf("%d handlers still running after Close", n)
			}
			if got := metric(t, reg, "bifrost_mqtt_listener_connections_open", kind); got != 0 {
				t.Errorf("open = %v after Close", got)
			}
			for i, c := range append(clients, stuck) {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
					t.Errorf("client %d: read = %v, want closed", i, err)
				}
			}
			if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
				t.Error("still accepting after Close")
			}
			if err := l.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}
