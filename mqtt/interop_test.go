package mqtt_test

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"testing"

	"github.com/bifrost-mq/bifrost/internal/clustertls/tlstest"
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
// TLS ones with a certificate for 127.0.0.1 from a test CA.
type interopEnv struct {
	*env
	tls *tls.Config // trusts the test CA, for Go clients
}

func startInteropEnv(t *testing.T) *interopEnv {
	t.Helper()
	ca := tlstest.NewCA(t, "bifrost interop test")
	server := ca.Node("server")
	e := startEnv(t, 1, func(c *mqtt.Config) {
		for _, k := range interopKinds[1:] {
			lc := listener.Config{Kind: k, Addr: "127.0.0.1:0"}
			if k == listener.TLS || k == listener.WSS {
				lc.CertFile, lc.KeyFile = server.Cert, server.Key
			}
			c.Listeners = append(c.Listeners, lc)
		}
	})
	return &interopEnv{env: e, tls: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}
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

// topicFor names a test's topic tree after the client and transport, so
// subtests sharing a frontend never see each other's messages.
func topicFor(client string, k listener.Kind) string {
	return fmt.Sprintf("interop/%s/%s", client, k)
}
