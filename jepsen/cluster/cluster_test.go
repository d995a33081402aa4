package cluster

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen/internal/testbin"
)

// reachable reports whether a TCP connection from node from's namespace to
// addr opens within a second.
func reachable(from *Node, addr string) bool {
	host, port, _ := strings.Cut(addr, ":")
	err := exec.Command("ip", "netns", "exec", from.NS, "timeout", "1", "bash", "-c", "echo > /dev/tcp/"+host+"/"+port).Run()
	return err == nil
}

// TestClusterLifecycle: three stores in their own namespaces form a
// cluster, and a frontend in a fourth takes MQTT connections; a partition rule inside a receiver's namespace cuts exactly that
// direction; kill, pause and restart act on the real process; Close leaves
// no namespace, link or process behind.
func TestClusterLifecycle(t *testing.T) {
	if err := RequireTools(); err != nil {
		t.Skip(err)
	}
	bin := testbin.Bifrost(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := New(ctx, Config{Binary: bin, Dir: t.TempDir(), Stores: 3, Frontends: 1})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			c.Close()
		}
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, "probe"); err != nil {
		t.Fatal(err)
	}
	n1, n2, n3 := c.Stores()[0], c.Stores()[1], c.Stores()[2]
	f1 := c.Frontends()[0]
	for deadline := time.Now().Add(30 * time.Second); !reachable(n1, f1.MQTTAddr()); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) || !f1.Running() {
			t.Fatalf("frontend %s (running %v) takes no MQTT connection on %s", f1.Name, f1.Running(), f1.MQTTAddr())
		}
	}
	if !reachable(n2, n1.GRPCAddr()) || !reachable(n1, n2.GRPCAddr()) {
		t.Fatal("n1 and n2 cannot reach each other before any partition")
	}
	// n1 drops what n2 sends: n2 -> n1 is cut, n1 -> n2 (a new connection's
	// SYN reaches n2, but its SYN-ACK is dropped at n1) is cut too, n3 -> n1 is not.
	if err := c.Partition(ctx, map[*Node][]*Node{n1: {n2}}); err != nil {
		t.Fatal(err)
	}
	if reachable(n2, n1.GRPCAddr()) {
		t.Error("n2 reaches n1 through the partition")
	}
	if !reachable(n3, n1.GRPCAddr()) {
		t.Error("n3 cannot reach n1, which only n2 is cut from")
	}
	if err := c.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	if !reachable(n2, n1.GRPCAddr()) {
		t.Error("n2 cannot reach n1 after the heal")
	}

	if err := n3.Pause(); err != nil {
		t.Fatal(err)
	}
	// SIGSTOP takes effect asynchronously: wait for the stopped state.
	for deadline := time.Now().Add(3 * time.Second); procState(t, n3) != "T" && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !n3.Paused() || procState(t, n3) != "T" {
		t.Errorf("n3 paused: Paused()=%v, state %q, want stopped (T)", n3.Paused(), procState(t, n3))
	}
	if err := n3.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := n3.Kill(); err != nil {
		t.Fatal(err)
	}
	if n3.Running() {
		t.Fatal("n3 runs after Kill")
	}
	if err := n3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n3.WaitReady(ctx, "probe"); err != nil {
		t.Fatal(err)
	}
	if cr := c.Crashes(); len(cr) != 0 {
		t.Errorf("crashes recorded for exits the harness caused: %v", cr)
	}
	// Close with a partition in force, as after a Ctrl-C mid-fault: every
	// store cut off from the others, so the connections its killed
	// processes leave behind cannot finish closing. Those orphaned sockets
	// kept the namespaces, and so the host ends of their veth pairs, for
	// minutes after a Close that had not healed first.
	all := map[*Node][]*Node{}
	for _, n := range c.Stores() {
		for _, m := range c.Stores() {
			if m != n {
				all[n] = append(all[n], m)
			}
		}
	}
	if err := c.Partition(ctx, all); err != nil {
		t.Fatal(err)
	}
	pid := n1.pid()
	closed = true
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/" + pid); err == nil {
		t.Errorf("process %s of n1 survives Close", pid)
	}
	// The kernel removes a veth whose peer's namespace went a moment later,
	// on its own: give it a few seconds before calling it left behind.
	id := NamePrefix + c.ID()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := exec.Command("ip", "netns", "list").Output()
		links, _ := exec.Command("ip", "-o", "link").Output()
		if !strings.Contains(string(out), id) && !strings.Contains(string(links), id) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("cluster %s left namespaces or links:\n%s\n%s", id, out, links)
			break
		}
	}
}

func procState(t *testing.T, n *Node) string {
	b, err := os.ReadFile("/proc/" + n.pid() + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ...
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}
