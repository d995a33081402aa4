package clustertls

import (
	"context"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
)

// handshakeFailures counts failed gRPC TLS handshakes of this process's
// cluster credentials, by side: "server" (a peer refused: no certificate,
// another CA's, plaintext) and "client" (a server refused or not trusted).
// Raft's handshakes happen inside Dragonboat and are not counted.
func newHandshakeFailures() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bifrost_cluster_tls_handshake_failures_total",
		Help: "Failed mutual TLS handshakes on cluster gRPC connections, by side (server: a peer was refused; client: a server was refused or refused us).",
	}, []string{"side"})
}

// Register puts the credentials' metrics on reg; nil credentials have none.
func (c *Credentials) Register(reg prometheus.Registerer) error {
	if c == nil || reg == nil {
		return nil
	}
	return reg.Register(c.failures)
}

// countingCreds is TLS transport credentials that count failed handshakes.
type countingCreds struct {
	credentials.TransportCredentials
	server, client prometheus.Counter
}

func (c countingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.server.Inc()
	}
	return nc, info, err
}

func (c countingCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, conn)
	if err != nil && ctx.Err() == nil {
		c.client.Inc()
	}
	return nc, info, err
}

func (c countingCreds) Clone() credentials.TransportCredentials {
	return countingCreds{TransportCredentials: c.TransportCredentials.Clone(), server: c.server, client: c.client}
}
