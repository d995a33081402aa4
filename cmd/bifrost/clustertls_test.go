package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/internal/clustertls/tlstest"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestClusterTLSFlagErrors: the three -cluster-tls-* flags go together, from
// the command line, the environment or the config file, and files that do
// not make a cluster identity (or a gossip key) stop the process at startup
// with one line.
func TestClusterTLSFlagErrors(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	good, other := ca.Node("a"), ca.Node("b")
	foreign := tlstest.NewCA(t, "outsider").Node("c")
	conf := filepath.Join(t.TempDir(), "bifrost.toml")
	if err := os.WriteFile(conf, []byte("cluster-tls-ca = \""+good.CA+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	keyFile := func(name, body string) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tlsArgs := func(cert, key, ca string) []string {
		return []string{"--cluster-tls-cert", cert, "--cluster-tls-key", key, "--cluster-tls-ca", ca}
	}
	tests := []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"store", "--cluster-tls-cert", good.Cert}, "", "missing -cluster-tls-key, -cluster-tls-ca"},
		{[]string{"standalone", "--cluster-tls-cert", good.Cert, "--cluster-tls-key", good.Key}, "", "missing -cluster-tls-ca"},
		{[]string{"frontend", "--join", "127.0.0.1:1", "--cluster-tls-ca", good.CA}, "", "missing -cluster-tls-cert, -cluster-tls-key"},
		{[]string{"admin", "cluster", "--cluster-tls-key", good.Key}, "", "missing -cluster-tls-cert, -cluster-tls-ca"},
		{[]string{"store"}, good.Cert, "missing -cluster-tls-key, -cluster-tls-ca"},
		{[]string{"store", "--config", conf}, "", "missing -cluster-tls-cert, -cluster-tls-key"},
		{append([]string{"store"}, tlsArgs(good.Cert, other.Key, good.CA)...), "", "private key does not match"},
		{append([]string{"standalone"}, tlsArgs("/nonexistent/cert.pem", good.Key, good.CA)...), "", "no such file"},
		{append([]string{"frontend", "--join", "127.0.0.1:1"}, tlsArgs(foreign.Cert, foreign.Key, good.CA)...), "", "not signed by the cluster CA"},
		{append([]string{"admin", "ranges"}, tlsArgs(good.Cert, good.Key, good.Key)...), "", "no PEM certificate"},
		{[]string{"store", "--gossip-key-file", "/nonexistent/key"}, "", "-gossip-key-file"},
		{[]string{"standalone", "--gossip-key-file", keyFile("notb64", "not base64!")}, "", "want base64"},
		{[]string{"frontend", "--join", "127.0.0.1:1", "--gossip-key-file", keyFile("short", "c2hvcnQ=\n")}, "", "5 bytes, want 16, 24 or 32"},
	}
	for _, tc := range tests {
		if tc.env != "" {
			t.Setenv("BIFROST_CLUSTER_TLS_CERT", tc.env)
		} else {
			os.Unsetenv("BIFROST_CLUSTER_TLS_CERT")
		}
		code, _, stderr := runCLI(tc.args...)
		if code != 2 {
			t.Errorf("%v (env %q): exit %d, want 2", tc.args, tc.env, code)
		}
		if !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v (env %q): stderr %q, want one line saying %q", tc.args, tc.env, stderr, tc.want)
		}
	}
}

// TestClusterTLSProcesses runs the real binary with cluster certificates and
// a gossip key: a standalone store and two frontends. A message published on one frontend
// reaches a subscriber on the other (frontend to store and frontend to
// frontend gRPC over mutual TLS); the admin command works with a member's
// certificate and is refused without one.
func TestClusterTLSProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	ca := tlstest.NewCA(t, "cluster")
	gossipKey := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(gossipKey, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsArgs := func(name string) []string {
		f := ca.Node(name)
		return []string{"--cluster-tls-cert", f.Cert, "--cluster-tls-key", f.Key, "--cluster-tls-ca", f.CA}
	}
	memberArgs := func(name string) []string { return append(tlsArgs(name), "--gossip-key-file", gossipKey) }
	storeGossip, storeGRPC := rangestest.FreeAddr(t), rangestest.FreeAddr(t)
	startProc(t, bin, "store.log", append([]string{"standalone", "--data", filepath.Join(t.TempDir(), "data"),
		"--gossip", storeGossip, "--raft", rangestest.FreeAddr(t), "--grpc", storeGRPC,
		"--http", "", "--mqtt", "", "--mqtt-ws", "", "--raft-rtt-ms", "20"}, memberArgs("store")...)...)
	var mqttAddrs, frontGRPC []string
	apiAddr := rangestest.FreeAddr(t)
	for i := 0; i < 2; i++ {
		addr := rangestest.FreeAddr(t)
		mqttAddrs = append(mqttAddrs, addr)
		frontGRPC = append(frontGRPC, rangestest.FreeAddr(t))
		api := ""
		if i == 0 {
			api = apiAddr
		}
		startProc(t, bin, "frontend"+string(rune('0'+i))+".log", append([]string{"frontend", "--join", storeGossip,
			"--gossip", rangestest.FreeAddr(t), "--grpc", frontGRPC[i], "--http", "", "--api", api,
			"--mqtt", addr, "--mqtt-ws", ""}, memberArgs("frontend"+string(rune('0'+i)))...)...)
	}
	sub := dialMQTT(t, mqttAddrs[1], "sub", 60*time.Second)
	sub.subscribe("tls/#")
	pub := dialMQTT(t, mqttAddrs[0], "pub", 60*time.Second)
	pub.publish("tls/1", 1, "across")
	if got := sub.receive(); got != "across" {
		t.Fatalf("subscriber on the other frontend got %q", got)
	}

	// The HTTP API of frontend 0 reaches the store (members) and the other
	// frontend (a kick) over the cluster's TLS.
	for path, method := range map[string]string{"/api/v1/cluster/members": "GET", "/api/v1/sessions/sub/kick": "POST"} {
		req, _ := http.NewRequest(method, "http://"+apiAddr+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s %s over cluster TLS: %d %s", method, path, resp.StatusCode, body)
		}
	}

	// The frontend's own service refuses a caller without a certificate:
	// no one outside the cluster kicks a client.
	conn, err := grpc.NewClient(frontGRPC[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := mqttpb.NewFrontendClient(conn).Kick(ctx, &mqttpb.KickRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("Kick without a certificate: %v, want Unavailable", err)
	}

	admin := append([]string{"admin", "--addr", storeGRPC, "--timeout", "5s"}, tlsArgs("operator")...)
	if code, _, stderr := runCLI(append(admin, "kv", "put", "k", "v")...); code != 0 {
		t.Fatalf("admin with a member's certificate: exit %d: %s", code, stderr)
	}
	code, _, stderr := runCLI("admin", "--addr", storeGRPC, "--timeout", "5s", "kv", "put", "k", "w")
	if code == 0 {
		t.Fatal("admin without a certificate wrote a key")
	}
	if !strings.Contains(stderr, "needs them on admin too") {
		t.Errorf("admin without a certificate: %q does not say why", stderr)
	}
	if code, out, stderr := runCLI(append(admin, "kv", "get", "k")...); code != 0 || strings.TrimSpace(out) != "v" {
		t.Fatalf("admin get: exit %d, %q, %s", code, out, stderr)
	}
}
