package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestListenersOpenOnlyWhenReady: a frontend started before any store of its
// cluster keeps its MQTT port closed, says on /healthz (503) and in its log
// what it waits for, and opens the port, answers /healthz 200 and logs
// "ready" once the cluster it joins serves; a CONNECT and a QoS 1 publish
// then work at once (no client is accepted that the broker cannot serve).
func TestListenersOpenOnlyWhenReady(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	storeGossip := rangestest.FreeAddr(t)
	mqttAddr, httpAddr := rangestest.FreeAddr(t), rangestest.FreeAddr(t)
	logDir := t.TempDir()
	startProcIn(t, bin, logDir, "frontend.log", "frontend", "--join", storeGossip,
		"--gossip", rangestest.FreeAddr(t), "--grpc", rangestest.FreeAddr(t), "--http", httpAddr, "--api", "",
		"--mqtt", mqttAddr, "--mqtt-ws", "")
	healthz := func() (int, string) {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := healthz()
		if code == http.StatusServiceUnavailable && strings.Contains(body, "not ready: waiting for") {
			break
		}
		if code == http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("a frontend without a cluster: /healthz %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Its log says what it waits for (a second after start, then every 5 s).
	logPath := filepath.Join(logDir, "frontend.log")
	for !strings.Contains(readFile(t, logPath), "not ready yet") {
		if time.Now().After(deadline) {
			t.Fatalf("the frontend's log does not say what it waits for:\n%s", readFile(t, logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", mqttAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("the MQTT port is open before the cluster serves")
	}

	startProc(t, bin, "store.log", "standalone", "--data", filepath.Join(t.TempDir(), "data"),
		"--gossip", storeGossip, "--raft", rangestest.FreeAddr(t), "--grpc", rangestest.FreeAddr(t),
		"--http", "", "--api", "", "--mqtt", rangestest.FreeAddr(t), "--mqtt-ws", "", "--raft-rtt-ms", "20")
	deadline = time.Now().Add(60 * time.Second)
	for {
		code, body := healthz()
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the frontend never turned ready: /healthz %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(readFile(t, logPath), "msg=ready") {
		t.Fatalf("no \"ready\" line in the frontend's log:\n%s", readFile(t, logPath))
	}
	// Ready means ready: the first client is served at once.
	sub := dialMQTT(t, mqttAddr, "sub", 0)
	sub.subscribe("r/#")
	pub := dialMQTT(t, mqttAddr, "pub", 0)
	pub.publish("r/1", 1, "first")
	if got := sub.receive(); got != "first" {
		t.Fatalf("received %q", got)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
