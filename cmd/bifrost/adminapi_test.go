package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/api"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestAdminAPICommands runs the real binary (bifrost standalone with the
// HTTP API behind a token file) and the admin commands that call the API:
// pub, retain, sessions and sub, checked against real MQTT clients.
func TestAdminAPICommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("cli-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mqttAddr, apiAddr := rangestest.FreeAddr(t), rangestest.FreeAddr(t)
	startProc(t, bin, "standalone.log", "standalone", "--data", filepath.Join(dir, "data"),
		"--gossip", rangestest.FreeAddr(t), "--raft", rangestest.FreeAddr(t), "--grpc", rangestest.FreeAddr(t),
		"--http", "", "--mqtt", mqttAddr, "--mqtt-ws", "", "--raft-rtt-ms", "20",
		"--api", apiAddr, "--api-token-file", tokenFile)
	admin := func(args ...string) (int, string, string) {
		return runCLI(append([]string{"admin", "--api-addr", apiAddr, "--api-token-file", tokenFile}, args...)...)
	}
	sub := dialMQTT(t, mqttAddr, "cli-sub", 60*time.Second) // the listeners open once the node is ready
	sub.subscribe("cli/#")

	code, out, stderr := admin("pub", "cli/a", "hello", "--qos", "1", "--json")
	var res api.PublishResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Subscribers != 1 {
		t.Fatalf("pub: exit %d, %q, %q", code, out, stderr)
	}
	if got := sub.receive(); got != "hello" {
		t.Fatalf("subscriber got %q", got)
	}

	if code, _, stderr := admin("retain", "set", "ret/a", "kept", "--qos", "1"); code != 0 {
		t.Fatalf("retain set: exit %d: %s", code, stderr)
	}
	if code, out, _ := admin("retain", "get", "ret/a"); code != 0 || out != "kept\n" {
		t.Fatalf("retain get: exit %d, %q", code, out)
	}
	late := dialMQTT(t, mqttAddr, "cli-late", 10*time.Second)
	late.subscribe("ret/+")
	if got := late.receive(); got != "kept" {
		t.Fatalf("a new subscriber got %q, want the retained message", got)
	}
	if code, out, _ := admin("retain", "get", "--filter", "ret/#", "--json"); code != 0 || !strings.Contains(out, `"topic": "ret/a"`) {
		t.Fatalf("retain get --filter: exit %d, %q", code, out)
	}
	if code, _, _ := admin("retain", "clear", "ret/a"); code != 0 {
		t.Fatalf("retain clear: exit %d", code)
	}
	if code, _, stderr := admin("retain", "get", "ret/a"); code != 1 || !strings.Contains(stderr, "404") {
		t.Fatalf("retain get after clear: exit %d, %q", code, stderr)
	}

	// A persistent session, offline once its connection closed.
	p, err := tryMQTT(mqttAddr, "cli-persist", false)
	if err != nil {
		t.Fatal(err)
	}
	p.nc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, stderr = admin("sub", "add", "cli-persist", "sub/+", "--qos", "1")
		if code == 0 {
			break
		}
		if !strings.Contains(stderr, "409") || time.Now().After(deadline) {
			t.Fatalf("sub add: exit %d, %q", code, stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, out, _ = admin("sessions", "show", "cli-persist", "--json")
	var s api.Session
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || !s.Persistent || s.Online || len(s.Subscriptions) != 1 || s.Subscriptions[0].Filter != "sub/+" {
		t.Fatalf("sessions show: exit %d, %q", code, out)
	}
	if code, out, _ := admin("sessions", "list", "--prefix", "cli-"); code != 0 || !strings.Contains(out, "cli-persist") || !strings.Contains(out, "CLIENT ID") {
		t.Fatalf("sessions list: exit %d, %q", code, out)
	}
	if code, _, stderr := admin("sub", "remove", "cli-persist", "never/subscribed"); code != 1 || !strings.Contains(stderr, "404") {
		t.Fatalf("sub remove of an absent subscription: exit %d, %q", code, stderr)
	}
	if code, _, _ := admin("sub", "remove", "cli-persist", "sub/+"); code != 0 {
		t.Fatalf("sub remove: exit %d", code)
	}
	if code, _, stderr := admin("sessions", "show", "nobody"); code != 1 || !strings.Contains(stderr, "404") {
		t.Fatalf("sessions show of no session: exit %d, %q", code, stderr)
	}

	k := dialMQTT(t, mqttAddr, "cli-kick", 10*time.Second)
	if code, out, stderr := admin("sessions", "kick", "cli-kick"); code != 0 || out != "ok\n" {
		t.Fatalf("sessions kick: exit %d, %q, %q", code, out, stderr)
	}
	k.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := k.r.ReadPacket(packet.V311); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the kicked connection: %v, want it closed", err)
	}

	// The status page shares the API's address, its document behind the
	// token.
	for path, want := range map[string]int{"/": 200, "/api/v1/status": 401} {
		resp, err := http.Get("http://" + apiAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	req, _ := http.NewRequest("GET", "http://"+apiAddr+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer cli-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /api/v1/status with the token: %d", resp.StatusCode)
	}

	if code, _, stderr := runCLI("admin", "--api-addr", apiAddr, "--api-token", "wrong", "sessions", "list"); code != 1 || !strings.Contains(stderr, "401") {
		t.Fatalf("a wrong token: exit %d, %q", code, stderr)
	}
	for _, args := range [][]string{{"pub", "t"}, {"sessions"}, {"sessions", "frob"}, {"sub", "add", "c"}, {"retain", "get"}, {"pub", "t", "p", "--qos", "3"}} {
		if code, _, _ := admin(args...); code != 2 {
			t.Errorf("admin %v: exit %d, want 2", args, code)
		}
	}
}

// TestAPIOffLoopbackNeedsToken: a process whose API address is not loopback
// refuses to start without a token (exit 2, before anything starts).
func TestAPIOffLoopbackNeedsToken(t *testing.T) {
	for _, args := range [][]string{
		{"standalone", "--data", t.TempDir(), "--api", "0.0.0.0:8090"},
		{"frontend", "--join", "127.0.0.1:7946", "--api", ":8090"},
		{"standalone", "--data", t.TempDir(), "--api", "127.0.0.1:8090", "--api-token-file", "/nonexistent/token"},
	} {
		code, _, stderr := runCLI(args...)
		if code != 2 || !strings.Contains(stderr, "token") {
			t.Errorf("%v: exit %d, %q", args, code, stderr)
		}
	}
}
