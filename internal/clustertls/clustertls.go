// Package clustertls is the one place that secures the cluster's own traffic:
// every gRPC server and client between nodes (stores' KV, admin, store and
// coprocessor services, frontends' Frontend service, the admin command) is
// made here, with mutual TLS when the cluster has certificates and in
// plaintext when it has none. Raft (Dragonboat) reads the same files.
//
// Invariant: with credentials, a server requires a client certificate signed
// by the cluster's CA (tls.RequireAndVerifyClientCert), and a client verifies
// the server's certificate against the same CA and the host it dialled, so a
// node's certificate must name (as a DNS or IP SAN) every host peers reach it
// on. A nil *Credentials means plaintext, as a cluster without the flags runs.
package clustertls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Files names the PEM files of a node's cluster identity: its certificate
// (the chain up to the CA may follow it), its private key, and the CA that
// signs every node's certificate. All three are set, or none.
type Files struct {
	Cert, Key, CA string
}

// Enabled reports whether any file is named.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Missing names the files ("cert", "key", "ca") a partial set lacks; none
// for a full set or an empty one.
func (f Files) Missing() []string {
	if !f.Enabled() {
		return nil
	}
	var missing []string
	for _, m := range []struct{ name, v string }{{"cert", f.Cert}, {"key", f.Key}, {"ca", f.CA}} {
		if m.v == "" {
			missing = append(missing, m.name)
		}
	}
	return missing
}

// Validate reports a partial set: all three files, or none.
func (f Files) Validate() error {
	if m := f.Missing(); len(m) > 0 {
		return fmt.Errorf("cluster TLS needs a certificate, its key and the CA together; missing %s", strings.Join(m, ", "))
	}
	return nil
}

// Credentials are a node's loaded cluster identity. The zero of
// *Credentials (nil) is plaintext.
type Credentials struct {
	files    Files
	cert     tls.Certificate
	pool     *x509.CertPool
	failures *prometheus.CounterVec
}

// ErrNotSignedByCA: the node's own certificate does not chain to the CA it
// was given, so no peer would accept it either.
var ErrNotSignedByCA = errors.New("certificate is not signed by the cluster CA")

// Load reads and checks the files: nil credentials and no error when none is
// named; an error for a partial set, an unreadable file, a key that is not
// the certificate's, a CA file without a certificate, or a certificate the
// CA did not sign.
func Load(f Files) (*Credentials, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("cluster TLS certificate %s and key %s: %w", f.Cert, f.Key, err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("cluster TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cluster TLS CA %s: no PEM certificate in it", f.CA)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("cluster TLS certificate %s: %w", f.Cert, err)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	// A node is both server and client, so its certificate must serve as both.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("cluster TLS certificate %s: %w (CA %s): %v", f.Cert, ErrNotSignedByCA, f.CA, err)
	}
	return &Credentials{files: f, cert: cert, pool: pool, failures: newHandshakeFailures()}, nil
}

// Files returns the files the credentials were loaded from (none for nil).
func (c *Credentials) Files() Files {
	if c == nil {
		return Files{}
	}
	return c.files
}

// ServerConfig is the TLS configuration of a server that admits only peers
// with a certificate from the CA.
func (c *Credentials) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.pool,
	}
}

// ClientConfig is the TLS configuration of a client that presents the
// node's certificate and trusts only servers with one from the CA. gRPC sets
// the server name to verify from the address dialled.
func (c *Credentials) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.cert},
		RootCAs:      c.pool,
	}
}

// transport is gRPC's TLS credentials for cfg, counting failed handshakes.
func (c *Credentials) transport(cfg *tls.Config) credentials.TransportCredentials {
	return countingCreds{TransportCredentials: credentials.NewTLS(cfg),
		server: c.failures.WithLabelValues("server"), client: c.failures.WithLabelValues("client")}
}

// NewServer makes a gRPC server for cluster traffic: mutual TLS with
// credentials, plaintext without.
func NewServer(c *Credentials, opts ...grpc.ServerOption) *grpc.Server {
	if c != nil {
		opts = append(opts, grpc.Creds(c.transport(c.ServerConfig())))
	}
	return grpc.NewServer(opts...)
}

// NewClient makes a gRPC client of a cluster member at addr: mutual TLS with
// credentials, plaintext without.
func NewClient(c *Credentials, addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	tc := insecure.NewCredentials()
	if c != nil {
		tc = c.transport(c.ClientConfig())
	}
	return grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(tc))...)
}
