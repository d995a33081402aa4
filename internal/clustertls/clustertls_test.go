package clustertls_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/internal/clustertls/tlstest"
)

// TestLoadRefusesBadFiles: a partial set, unreadable files, a key of another
// certificate, a CA file without a certificate and a certificate from
// another CA are errors at startup, each saying what is wrong.
func TestLoadRefusesBadFiles(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	good := ca.Node("a")
	other := ca.Node("b")
	foreign := tlstest.NewCA(t, "outsider").Node("c")
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files clustertls.Files
		want  string
	}{
		{"no key", clustertls.Files{Cert: good.Cert, CA: good.CA}, "missing key"},
		{"only a CA", clustertls.Files{CA: good.CA}, "missing cert, key"},
		{"unreadable cert", clustertls.Files{Cert: "/nonexistent/cert.pem", Key: good.Key, CA: good.CA}, "no such file"},
		{"unreadable CA", clustertls.Files{Cert: good.Cert, Key: good.Key, CA: "/nonexistent/ca.pem"}, "no such file"},
		{"key of another cert", clustertls.Files{Cert: good.Cert, Key: other.Key, CA: good.CA}, "private key does not match"},
		{"CA without a certificate", clustertls.Files{Cert: good.Cert, Key: good.Key, CA: notPEM}, "no PEM certificate"},
		{"cert from another CA", clustertls.Files{Cert: foreign.Cert, Key: foreign.Key, CA: good.CA}, "not signed by the cluster CA"},
	}
	for _, tc := range tests {
		creds, err := clustertls.Load(tc.files)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Load = %v, %v; want an error saying %q", tc.name, creds, err, tc.want)
		}
	}
	if creds, err := clustertls.Load(clustertls.Files{}); creds != nil || err != nil {
		t.Errorf("no files: Load = %v, %v; want plaintext (nil, nil)", creds, err)
	}
	if creds, err := clustertls.Load(good); creds == nil || err != nil {
		t.Errorf("good files: Load = %v, %v", creds, err)
	}
}

// serve runs a gRPC server made by NewServer with the health service, and
// returns its address.
func serve(t *testing.T, creds *clustertls.Credentials) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := clustertls.NewServer(creds)
	healthpb.RegisterHealthServer(s, health.NewServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

func call(t *testing.T, creds *clustertls.Credentials, addr string) error {
	t.Helper()
	conn, err := clustertls.NewClient(creds, addr)
	if err != nil {
		t.Fatal(err)
	}
	return check(conn)
}

func check(conn *grpc.ClientConn) error {
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// TestMutualTLS: with credentials, a server answers only clients with a
// certificate from its CA, and a client talks only to servers with one.
func TestMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	outsider := tlstest.NewCA(t, "outsider")
	server := ca.Credentials("server")
	secure := serve(t, server)
	impostor := serve(t, outsider.Credentials("impostor"))
	plain := serve(t, nil)
	member := ca.Credentials("member")
	serverReg, memberReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	if err := server.Register(serverReg); err != nil {
		t.Fatal(err)
	}
	if err := member.Register(memberReg); err != nil {
		t.Fatal(err)
	}

	if err := call(t, member, secure); err != nil {
		t.Fatalf("member to member: %v", err)
	}
	if err := call(t, nil, plain); err != nil {
		t.Fatalf("plaintext cluster: %v", err)
	}
	refused := []struct {
		name   string
		client *clustertls.Credentials
		addr   string
	}{
		{"plaintext client", nil, secure},
		{"client with another CA's certificate", outsider.Credentials("stranger"), secure},
		{"server with another CA's certificate", member, impostor},
		{"plaintext server", member, plain},
	}
	// A TLS client that trusts the CA but has no certificate of its own.
	anon, err := grpc.NewClient(secure, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool()})))
	if err != nil {
		t.Fatal(err)
	}
	if err := check(anon); status.Code(err) != codes.Unavailable {
		t.Errorf("TLS client without a certificate: got %v, want Unavailable", err)
	}
	for _, tc := range refused {
		err := call(t, tc.client, tc.addr)
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: got %v, want Unavailable", tc.name, err)
		}
		if err == nil {
			t.Errorf("%s: call succeeded", tc.name)
		}
	}

	// The refusals are counted: the server refused three peers, the
	// member failed to reach two servers. A server may count its side just
	// after the client gave up.
	deadline := time.Now().Add(5 * time.Second)
	for failures(t, serverReg, "server") < 3 || failures(t, memberReg, "client") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("handshake failures: server side %v (want 3 or more), member's client side %v (want 2 or more)",
				failures(t, serverReg, "server"), failures(t, memberReg, "client"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := failures(t, memberReg, "server"); n != 0 {
		t.Errorf("the member served nothing, yet counts %v refused peers", n)
	}
}

// failures reads bifrost_cluster_tls_handshake_failures_total{side} from reg.
func failures(t *testing.T, reg *prometheus.Registry, side string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "bifrost_cluster_tls_handshake_failures_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "side" && l.GetValue() == side {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
