package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Role is what a node runs.
type Role string

const (
	// RoleStore runs `bifrost store`.
	RoleStore Role = "store"
	// RoleFrontend runs `bifrost frontend`.
	RoleFrontend Role = "frontend"
)

// Node is one bifrost process slot: its namespace, address and data stay,
// the process comes and goes.
type Node struct {
	c *Cluster
	// Name is n1..nN for stores, f1..fM for frontends.
	Name string
	Role Role
	// Index is the node's position in Cluster.Nodes.
	Index int
	// NS is the network namespace, IP its address on the bridge.
	NS  string
	IP  string
	dir string
	// hostLink is the host end of the node's veth pair.
	hostLink string

	mu     sync.Mutex
	proc   *process
	paused bool
}

type process struct {
	cmd *exec.Cmd
	// expected is set before the harness stops the process on purpose.
	expected bool
	done     chan struct{}
	err      error
}

// GRPCAddr is the node's gRPC address.
func (n *Node) GRPCAddr() string {
	if n.Role == RoleFrontend {
		return fmt.Sprintf("%s:%d", n.IP, FrontendGRPCPort)
	}
	return fmt.Sprintf("%s:%d", n.IP, GRPCPort)
}

// MQTTAddr is a frontend's MQTT TCP address.
func (n *Node) MQTTAddr() string { return fmt.Sprintf("%s:%d", n.IP, MQTTPort) }

// DataDir is the node's data directory.
func (n *Node) DataDir() string { return filepath.Join(n.dir, "data") }

// LogPath is the node's log; every start appends to it.
func (n *Node) LogPath() string { return filepath.Join(n.dir, "bifrost.log") }

func (n *Node) args() []string {
	if n.Role == RoleFrontend {
		return []string{"frontend",
			"--gossip", fmt.Sprintf("%s:%d", n.IP, FrontendGossipPort),
			"--grpc", n.GRPCAddr(),
			"--http", fmt.Sprintf("%s:%d", n.IP, FrontendHTTPPort),
			"--mqtt", n.MQTTAddr(), "--mqtt-ws", "", "--api", "",
			"--join", n.c.joinList(nil),
			"--name", n.Name,
		}
	}
	args := []string{"store",
		"--data", n.DataDir(),
		"--gossip", fmt.Sprintf("%s:%d", n.IP, GossipPort),
		"--raft", fmt.Sprintf("%s:%d", n.IP, RaftPort),
		"--grpc", n.GRPCAddr(),
		"--http", fmt.Sprintf("%s:%d", n.IP, HTTPPort),
		"--bootstrap-expect", strconv.Itoa(n.c.cfg.Stores),
		"--name", n.Name,
		"--test-clock-offset-file", n.clockOffsetPath(),
	}
	if join := n.c.joinList(n); join != "" {
		args = append(args, "--join", join)
	}
	return append(args, n.c.cfg.StoreArgs...)
}

func (n *Node) clockOffsetPath() string { return filepath.Join(n.dir, "clock-offset") }

// SetClockOffset skews the wall clock the store reads (its test-only
// -test-clock-offset-file) by d from now on, whether it runs or not; 0 puts
// it right. The store re-reads the offset within 100 ms.
func (n *Node) SetClockOffset(d time.Duration) error {
	if n.Role != RoleStore {
		return fmt.Errorf("%s is not a store: only stores have a skewable clock", n.Name)
	}
	tmp := n.clockOffsetPath() + ".tmp"
	if err := os.WriteFile(tmp, []byte(d.String()+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, n.clockOffsetPath())
}

// Start starts the node's process if it is not running.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil {
		return nil
	}
	log, err := os.OpenFile(n.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "=== jepsen: start %s at %s\n", n.Name, time.Now().UTC().Format(time.RFC3339Nano))
	// ip netns exec execs the binary in place: the PID is bifrost's own.
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.NS, n.c.cfg.Binary}, n.args()...)...)
	cmd.Dir = n.dir
	cmd.Stdout, cmd.Stderr = log, log
	// Pdeathsig: the node dies with the harness, even on SIGKILL of the
	// harness. Setpgid: a Ctrl-C at the terminal reaches the harness only,
	// which then stops the nodes itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	n.proc, n.paused = p, false
	go func() {
		p.err = cmd.Wait()
		log.Close()
		n.mu.Lock()
		expected := p.expected
		if n.proc == p {
			n.proc, n.paused = nil, false
		}
		n.mu.Unlock()
		if !expected {
			n.c.recordCrash(n, p.err)
		}
		close(p.done)
	}()
	n.c.log.Info("node started", "node", n.Name, "pid", cmd.Process.Pid)
	return nil
}

// Running reports whether the node's process exists (it may be paused).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc != nil
}

// Paused reports whether the node's process is stopped by SIGSTOP.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// Kill sends SIGKILL and waits for the process to go. A node not running
// is left as it is.
func (n *Node) Kill() error { return n.signalAndWait(syscall.SIGKILL, 0) }

// Terminate sends SIGTERM, and SIGKILL after grace.
func (n *Node) Terminate(grace time.Duration) error {
	return n.signalAndWait(syscall.SIGTERM, grace)
}

func (n *Node) signalAndWait(sig syscall.Signal, grace time.Duration) error {
	n.mu.Lock()
	p := n.proc
	if p == nil {
		n.mu.Unlock()
		return nil
	}
	p.expected = true
	n.mu.Unlock()
	// A stopped process does not act on SIGTERM until it continues.
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", n.Name, err)
	}
	if sig == syscall.SIGKILL {
		<-p.done
		return nil
	}
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	n.c.log.Info("node stopped", "node", n.Name, "signal", sig.String())
	return nil
}

// Pause stops the process with SIGSTOP.
func (n *Node) Pause() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return fmt.Errorf("pause %s: not running", n.Name)
	}
	if err := n.proc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause %s: %w", n.Name, err)
	}
	n.paused = true
	return nil
}

// Resume continues a paused process with SIGCONT.
func (n *Node) Resume() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return nil
	}
	if err := n.proc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("resume %s: %w", n.Name, err)
	}
	n.paused = false
	return nil
}

// Restart kills the process (if any) and starts it again on the same data.
func (n *Node) Restart(ctx context.Context) error {
	if err := n.Kill(); err != nil {
		return err
	}
	return n.Start(ctx)
}

// Wipe kills the process and deletes the node's data; the next Start
// joins the cluster as a new, empty store.
func (n *Node) Wipe() error {
	if err := n.Kill(); err != nil {
		return err
	}
	return os.RemoveAll(n.DataDir())
}

// stop ends the process for good, at Close.
func (n *Node) stop() { _ = n.Kill() }

// WaitReady waits until the store's admin HTTP server answers (it starts
// once the store is fully up; the gRPC server takes requests a moment
// earlier, before the store can route them) and then until a linearizable
// read of probeKey through it succeeds. Any answer counts: /healthz says 503
// on a store that holds no replica yet, which a store of a cluster larger
// than the replication factor may never do.
func (n *Node) WaitReady(ctx context.Context, probeKey string) error {
	if err := n.waitHealthy(ctx); err != nil {
		return err
	}
	cl, err := dial(n)
	if err != nil {
		return err
	}
	defer cl.Close()
	var last error
	for {
		if !n.Running() {
			return fmt.Errorf("%s is not running (log: %s)", n.Name, n.LogPath())
		}
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _, err := cl.Get(callCtx, []byte(probeKey))
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last error: %v)", n.Name, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// pid is the process's ID as a string ("" when not running).
func (n *Node) pid() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return ""
	}
	return strconv.Itoa(n.proc.cmd.Process.Pid)
}

// HTTPAddr is the node's admin HTTP address (/healthz, /metrics).
func (n *Node) HTTPAddr() string {
	if n.Role == RoleFrontend {
		return fmt.Sprintf("%s:%d", n.IP, FrontendHTTPPort)
	}
	return fmt.Sprintf("%s:%d", n.IP, HTTPPort)
}

func (n *Node) waitHealthy(ctx context.Context) error {
	hc := &http.Client{Timeout: time.Second}
	var last error
	for {
		if !n.Running() {
			return fmt.Errorf("%s is not running (log: %s)", n.Name, n.LogPath())
		}
		resp, err := hc.Get("http://" + n.HTTPAddr() + "/healthz")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s's admin HTTP server does not answer: %w (last: %v)", n.Name, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
