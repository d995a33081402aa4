package mqtt_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
)

// The interoperability tests run third-party clients against a frontend:
// Eclipse Paho's Go clients for MQTT 5 (paho5_test.go) and 3.1.1
// (paho311_test.go), and Debian's mosquitto_pub and mosquitto_sub
// (mosquitto_test.go). They check that what the raw-client tests of
// broker_test.go assert on the wire is also what real clients see.

// interopKinds are the listeners of an interopEnv, in their order in the
// frontend's Config.Listeners.
var interopKinds = []listener.Kind{listener.TCP, listener.TLS, listener.WS, listener.WSS}

// interopEnv is one store whose frontend listens on every transport, the
// TLS ones with a self-signed certificate for 127.0.0.1.
type interopEnv struct {
	*env
	// certFile is the server certificate (PEM), for clients that take a
	// CA file; tls trusts it, for Go clients.
	certFile string
	tls      *tls.Config
}

func startInteropEnv(t *testing.T) *interopEnv {
	t.Helper()
	certFile, keyFile, roots := selfSignedCert(t)
	e := startEnv(t, 1, func(c *mqtt.Config) {
		for _, k := range interopKinds[1:] {
			lc := listener.Config{Kind: k, Addr: "127.0.0.1:0"}
			if k == listener.TLS || k == listener.WSS {
				lc.CertFile, lc.KeyFile = certFile, keyFile
			}
			c.Listeners = append(c.Listeners, lc)
		}
	})
	return &interopEnv{env: e, certFile: certFile,
		tls: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
}

// listenerAddr is the address of frontend i's listener k, in the order of
// its Config.Listeners (0 is the TCP listener startEnv always opens; tune
// may append more).
func (e *env) listenerAddr(i, k int) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fronts[i].Addrs()[k].String()
}

// url is where a client dials transport k: the schemes both Paho clients
// know, and listener.DefaultPath for WebSocket.
func (e *interopEnv) url(k listener.Kind) *url.URL {
	for i, kind := range interopKinds {
		if kind != k {
			continue
		}
		u := &url.URL{Scheme: string(k), Host: e.listenerAddr(0, i)}
		if k == listener.WS || k == listener.WSS {
			u.Path = listener.DefaultPath
		}
		return u
	}
	e.t.Fatalf("no %s listener", k)
	return nil
}

// selfSignedCert writes a self-signed ECDSA certificate for 127.0.0.1 and
// its key into a temporary directory, and returns a pool that trusts it.
func selfSignedCert(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bifrost interop test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true, // its own root
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	write := func(path, typ string, b []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(certFile, "CERTIFICATE", der)
	write(keyFile, "PRIVATE KEY", keyDER)
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// topicFor names a test's topic tree after the client and transport, so
// subtests sharing a frontend never see each other's messages.
func topicFor(client string, k listener.Kind) string {
	return fmt.Sprintf("interop/%s/%s", client, k)
}
