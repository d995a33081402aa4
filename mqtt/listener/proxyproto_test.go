package listener

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// proxyV2 builds a version 2 header: cmd 1 PROXY, 0 LOCAL.
func proxyV2(cmd byte, src, dst netip.AddrPort, tlvs []byte) []byte {
	fam := byte(0x11)
	if src.Addr().Is6() {
		fam = 0x21
	}
	var body []byte
	body = append(body, src.Addr().AsSlice()...)
	body = append(body, dst.Addr().AsSlice()...)
	body = binary.BigEndian.AppendUint16(body, src.Port())
	body = binary.BigEndian.AppendUint16(body, dst.Port())
	body = append(body, tlvs...)
	h := append([]byte(nil), proxyV2Sig...)
	h = append(h, 0x20|cmd, fam)
	h = binary.BigEndian.AppendUint16(h, uint16(len(body)))
	return append(h, body...)
}

var (
	clientV4 = netip.MustParseAddrPort("203.0.113.7:51000")
	lbV4     = netip.MustParseAddrPort("198.51.100.1:1883")
	clientV6 = netip.MustParseAddrPort("[2001:db8::7]:51000")
	lbV6     = netip.MustParseAddrPort("[2001:db8::1]:1883")
)

// The parser on its own: each version's forms, and what it must refuse,
// from HAProxy's proxy-protocol.txt.
func TestReadProxyHeader(t *testing.T) {
	tlv := []byte{0x04, 0x00, 0x03, 'a', 'b', 'c'} // PP2_TYPE_NOOP, skipped
	for _, tc := range []struct {
		name    string
		in      []byte
		src     string // "" no address; "ERR" refused
		trailer string // what must be left unread
	}{
		{"v1 tcp4", []byte("PROXY TCP4 203.0.113.7 198.51.100.1 51000 1883\r\nMQTT"), "203.0.113.7:51000", "MQTT"},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 51000 1883\r\n"), "[2001:db8::7]:51000", ""},
		{"v1 unknown", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nX"), "", "X"},
		{"v1 unknown bare", []byte("PROXY UNKNOWN\r\n"), "", ""},
		{"v2 tcp4", append(proxyV2(1, clientV4, lbV4, nil), 'M'), "203.0.113.7:51000", "M"},
		{"v2 tcp6 with tlv", append(proxyV2(1, clientV6, lbV6, tlv), 'M'), "[2001:db8::7]:51000", "M"},
		{"v2 local", proxyV2(0, clientV4, lbV4, nil), "", ""},
		{"no header", []byte("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c"), "ERR", ""},
		{"short", []byte("PROX"), "ERR", ""},
		{"v1 lf only", []byte("PROXY TCP4 203.0.113.7 198.51.100.1 51000 1883\n"), "ERR", ""},
		{"v1 too long", []byte("PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n"), "ERR", ""},
		{"v1 tcp4 with v6", []byte("PROXY TCP4 2001:db8::7 198.51.100.1 51000 1883\r\n"), "ERR", ""},
		{"v1 bad port", []byte("PROXY TCP4 203.0.113.7 198.51.100.1 65536 1883\r\n"), "ERR", ""},
		{"v1 zero-padded port", []byte("PROXY TCP4 203.0.113.7 198.51.100.1 01883 1883\r\n"), "ERR", ""},
		{"v1 missing field", []byte("PROXY TCP4 203.0.113.7 198.51.100.1 51000\r\n"), "ERR", ""},
		{"v1 double space", []byte("PROXY TCP4  203.0.113.7 198.51.100.1 51000 1883\r\n"), "ERR", ""},
		{"v1 udp", []byte("PROXY UDP4 203.0.113.7 198.51.100.1 51000 1883\r\n"), "ERR", ""},
		{"v2 version 1", func() []byte { h := proxyV2(1, clientV4, lbV4, nil); h[12] = 0x11; return h }(), "ERR", ""},
		{"v2 bad command", func() []byte { h := proxyV2(1, clientV4, lbV4, nil); h[12] = 0x22; return h }(), "ERR", ""},
		{"v2 short body", func() []byte { h := proxyV2(1, clientV4, lbV4, nil); h[15] = 8; return h[:24] }(), "ERR", ""},
		{"v2 truncated", proxyV2(1, clientV4, lbV4, nil)[:20], "ERR", ""},
		{"v2 too long", func() []byte {
			h := proxyV2(1, clientV4, lbV4, make([]byte, ProxyV2MaxLen))
			return h
		}(), "ERR", ""},
		{"v2 bad signature", func() []byte { h := proxyV2(1, clientV4, lbV4, nil); h[9] = 'X'; return h }(), "ERR", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bytes.NewReader(tc.in)
			h, err := readProxyHeader(r)
			if tc.src == "ERR" {
				if err == nil {
					t.Fatalf("header %+v accepted", h)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if h.Source != nil {
				got = h.Source.String()
			}
			if got != tc.src {
				t.Errorf("source %q, want %q", got, tc.src)
			}
			if rest := tc.in[len(tc.in)-r.Len():]; string(rest) != tc.trailer {
				t.Errorf("left %q unread, want %q", rest, tc.trailer)
			}
		})
	}
}

// remoteRecorder records what a handler sees of the client's address.
type remoteRecorder struct {
	*echo
	mu      sync.Mutex
	remotes []string
}

func (r *remoteRecorder) handle(conn net.Conn, info ConnInfo) {
	r.mu.Lock()
	r.remotes = append(r.remotes, conn.RemoteAddr().String())
	r.mu.Unlock()
	r.echo.handle(conn, info)
}

// dialProxied connects to l, sends header first, then speaks l's kind.
func dialProxied(t *testing.T, l *Listener, tlsCfg *tls.Config, header []byte) net.Conn {
	t.Helper()
	dialRaw := func(ctx context.Context, _, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		if _, err := c.Write(header); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch l.cfg.Kind {
	case TCP, TLS:
		c, err := dialRaw(ctx, "tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if l.cfg.Kind == TLS {
			tlsCfg = tlsCfg.Clone()
			tlsCfg.ServerName = "127.0.0.1"
			tc := tls.Client(c, tlsCfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				t.Fatal(err)
			}
			return tc
		}
		return c
	default:
		tr := &http.Transport{TLSClientConfig: tlsCfg, DialContext: dialRaw}
		t.Cleanup(tr.CloseIdleConnections)
		wc, _, err := websocket.Dial(ctx, wsURL(l, "/mqtt"), &websocket.DialOptions{
			HTTPClient: &http.Client{Transport: tr}, Subprotocols: []string{"mqtt"},
		})
		if err != nil {
			t.Fatal(err)
		}
		return websocket.NetConn(context.Background(), wc, websocket.MessageBinary)
	}
}

// Behind a load balancer, the handler sees the client's address of the
// PROXY header, v1 or v2, on every kind (TLS and WebSocket run after the
// header), and the connection carries MQTT as without one.
func TestProxyProtocol(t *testing.T) {
	p := newPKI(t)
	headers := []struct {
		name   string
		header []byte
		want   string
	}{
		{"v1", []byte("PROXY TCP4 203.0.113.7 198.51.100.1 51000 1883\r\n"), "203.0.113.7:51000"},
		{"v2", proxyV2(1, clientV6, lbV6, nil), "[2001:db8::7]:51000"},
		{"v2 local", proxyV2(0, clientV4, lbV4, nil), "127.0.0.1:"},
	}
	for _, kind := range kinds {
		for _, h := range headers {
			t.Run(string(kind)+"/"+h.name, func(t *testing.T) {
				reg := prometheus.NewRegistry()
				rec := &remoteRecorder{echo: newEcho()}
				cfg := p.config(kind)
				cfg.ProxyProtocol = true
				if kind.secure() {
					cfg.ClientCAFile, cfg.RequireClientCert = p.caFile, true
				}
				l := start(t, cfg, rec.handle, reg)
				c := dialProxied(t, l, p.clientTLS(true), h.header)
				defer c.Close()
				rec.waitCall(t)
				pkt := packet(100, 'p')
				if _, err := c.Write(pkt); err != nil {
					t.Fatal(err)
				}
				expectEcho(t, c, pkt)
				rec.mu.Lock()
				remote := rec.remotes[0]
				rec.mu.Unlock()
				info := rec.infos[0]
				if !strings.HasPrefix(remote, h.want) || info.Remote.String() != remote {
					t.Errorf("RemoteAddr %s, info.Remote %s, want %s", remote, info.Remote, h.want)
				}
				if info.Proxy == nil || !strings.HasPrefix(info.Proxy.String(), "127.0.0.1:") {
					t.Errorf("info.Proxy = %v, want the load balancer's 127.0.0.1", info.Proxy)
				}
				if kind.secure() && (info.TLS == nil || len(info.TLS.PeerCertificates) == 0) {
					t.Errorf("TLS behind PROXY lost the client certificate: %+v", info.TLS)
				}
			})
		}
	}
}

// A proxy-protocol listener refuses connections without a valid header
// (counted), and one whose header stalls past the handshake timeout; a
// plain listener hands a PROXY header to the handler as stream bytes.
func TestProxyProtocolRefusals(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		name string
		kind Kind
		send []byte
	}{
		{"tcp mqtt without header", TCP, packet(10, 'a')},
		{"tls handshake without header", TLS, []byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8}},
		{"tcp malformed v1", TCP, []byte("PROXY TCP4 203.0.113.7 nowhere 51000 1883\r\n")},
		{"ws http without header", WS, []byte("GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"tcp stalled header", TCP, []byte("PROXY TCP4 203.0.113.7")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e := newEcho()
			cfg := p.config(tc.kind)
			cfg.ProxyProtocol = true
			cfg.HandshakeTimeout = 200 * time.Millisecond
			l := start(t, cfg, e.handle, reg)
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Fatalf("read = %v, want the server to close", err)
			}
			eventually(t, "the refusal counted", func() bool {
				return metric(t, reg, "bifrost_mqtt_listener_proxy_header_errors_total", tc.kind) == 1
			})
			if n := e.calls(); n != 0 {
				t.Errorf("handler called %d times", n)
			}
		})
	}
	t.Run("off: header reaches the handler", func(t *testing.T) {
		e := newEcho()
		l := start(t, p.config(TCP), e.handle, nil)
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		e.waitCall(t)
		// "PR" is the first two bytes the handler reads as a packet header:
		// type 5 (PUBREC), remaining length 'R' = 82.
		h := []byte("PROXY TCP4 203.0.113.7 198.51.100.1 51000 1883\r\n")
		h = append(h, make([]byte, 84-len(h))...)
		if _, err := c.Write(h); err != nil {
			t.Fatal(err)
		}
		expectEcho(t, c, h)
	})
}

// The parser never panics, never reads past the longest header it allows,
// and a header it accepts names a TCP address or none.
func FuzzReadProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 203.0.113.7 198.51.100.1 51000 1883\r\nMQTT"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(proxyV2(1, clientV6, lbV6, []byte{4, 0, 1, 0}))
	f.Add(proxyV2(0, clientV4, lbV4, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := readProxyHeader(r)
		read := len(in) - r.Len()
		if read > 16+ProxyV2MaxLen {
			t.Fatalf("read %d bytes", read)
		}
		if err != nil {
			return
		}
		if bytes.HasPrefix(in, proxyV1Prefix) && read > proxyV1MaxLen {
			t.Fatalf("v1 header of %d bytes accepted", read)
		}
		if h.Source != nil {
			if _, ok := h.Source.(*net.TCPAddr); !ok {
				t.Fatalf("source %T", h.Source)
			}
		}
	})
}
