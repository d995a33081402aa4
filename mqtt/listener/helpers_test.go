package listener

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, the certificates and keys written as PEM files.
type testPKI struct {
	caFile, certFile, keyFile string
	roots                     *x509.CertPool
	client                    tls.Certificate
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bifrost test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips ...net.IP) ([]byte, *ecdsa.PrivateKey) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	p := &testPKI{
		caFile:   filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, "server.pem"),
		keyFile:  filepath.Join(dir, "server-key.pem"),
		roots:    x509.NewCertPool(),
	}
	p.roots.AddCert(ca)
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	srvDER, srvKey := issue(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	writePEM(t, p.certFile, "CERTIFICATE", srvDER)
	writePEM(t, p.keyFile, "PRIVATE KEY", marshalKey(t, srvKey))
	cliDER, cliKey := issue(3, "client-1", x509.ExtKeyUsageClientAuth)
	p.client = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func marshalKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// clientTLS trusts the test CA and presents the client certificate if
// withCert.
func (p *testPKI) clientTLS(withCert bool) *tls.Config {
	c := &tls.Config{RootCAs: p.roots, MinVersion: tls.VersionTLS12}
	if withCert {
		c.Certificates = []tls.Certificate{p.client}
	}
	return c
}

// config is a listener config of kind on 127.0.0.1 port 0.
func (p *testPKI) config(kind Kind) Config {
	cfg := Config{Kind: kind, Addr: "127.0.0.1:0"}
	if kind.secure() {
		cfg.CertFile, cfg.KeyFile = p.certFile, p.keyFile
	}
	return cfg
}

// dial connects a client of the listener's kind and returns the stream.
func dial(t *testing.T, l *Listener, tlsCfg *tls.Config) net.Conn {
	t.Helper()
	addr := l.Addr().String()
	switch l.cfg.Kind {
	case TCP:
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	case TLS:
		c, err := tls.Dial("tcp", addr, tlsCfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	default:
		wc := dialWS(t, l, tlsCfg, []string{"mqtt"})
		return websocket.NetConn(context.Background(), wc, websocket.MessageBinary)
	}
}

func wsURL(l *Listener, path string) string {
	scheme := "ws"
	if l.cfg.Kind == WSS {
		scheme = "wss"
	}
	return scheme + "://" + l.Addr().String() + path
}

// httpClient is a client of its own, so no connection outlives the test.
func httpClient(t *testing.T, tlsCfg *tls.Config) *http.Client {
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func dialWS(t *testing.T, l *Listener, tlsCfg *tls.Config, protos []string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wc, _, err := websocket.Dial(ctx, wsURL(l, "/mqtt"), &websocket.DialOptions{
		HTTPClient:   httpClient(t, tlsCfg),
		Subprotocols: protos,
	})
	if err != nil {
		t.Fatal(err)
	}
	return wc
}

// readPacket reads one MQTT control packet: the type byte, the variable
// length remaining length and that many bytes.
func readPacket(r io.Reader) ([]byte, error) {
	pkt := make([]byte, 1, 16)
	if _, err := io.ReadFull(r, pkt); err != nil {
		return nil, err
	}
	n, shift := 0, 0
	for i := 0; ; i++ {
		var b [1]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		pkt = append(pkt, b[0])
		n |= int(b[0]&0x7f) << shift
		if b[0]&0x80 == 0 {
			break
		}
		if i == 3 {
			return nil, errors.New("malformed remaining length")
		}
		shift += 7
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return append(pkt, body...), nil
}

// packet is a PUBLISH-shaped packet with a payload of n bytes.
func packet(n int, fill byte) []byte {
	pkt := []byte{0x30}
	for rem := n; ; {
		b := byte(rem & 0x7f)
		rem >>= 7
		if rem > 0 {
			pkt = append(pkt, b|0x80)
			continue
		}
		pkt = append(pkt, b)
		break
	}
	return append(pkt, bytes.Repeat([]byte{fill}, n)...)
}

// echo is a handler that writes back each packet it reads, whole, and
// records what it saw.
type echo struct {
	mu      sync.Mutex
	packets [][]byte
	infos   []ConnInfo
	called  chan struct{}
	running atomic.Int32 // handler calls not returned yet
}

func newEcho() *echo { return &echo{called: make(chan struct{}, 16)} }

func (e *echo) handle(conn net.Conn, info ConnInfo) {
	e.running.Add(1)
	defer e.running.Add(-1)
	e.mu.Lock()
	e.infos = append(e.infos, info)
	e.mu.Unlock()
	e.called <- struct{}{}
	defer conn.Close()
	for {
		pkt, err := readPacket(conn)
		if err != nil {
			return
		}
		e.mu.Lock()
		e.packets = append(e.packets, pkt)
		e.mu.Unlock()
		if _, err := conn.Write(pkt); err != nil {
			return
		}
	}
}

func (e *echo) waitCall(t *testing.T) {
	t.Helper()
	select {
	case <-e.called:
	case <-time.After(5 * time.Second):
		t.Fatal("handler not called")
	}
}

// calls is how many times the handler was called.
func (e *echo) calls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.infos)
}

func (e *echo) received() [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([][]byte(nil), e.packets...)
}

// expectEcho reads want back from c.
func expectEcho(t *testing.T, c net.Conn, want ...[]byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, w := range want {
		got, err := readPacket(c)
		if err != nil {
			t.Fatalf("read echo: %v", err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("echo: got %d bytes %x..., want %d bytes %x...", len(got), head(got), len(w), head(w))
		}
	}
	_ = c.SetReadDeadline(time.Time{})
}

func head(b []byte) []byte { return b[:min(len(b), 8)] }

// metric returns the value of a listener metric of kind in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string, kind Kind) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "kind" && lp.GetValue() == string(kind) {
					if g := m.GetGauge(); g != nil {
						return g.GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// eventually polls cond for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
