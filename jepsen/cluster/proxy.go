package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The delay proxy. The kernel here has no netem, so delay comes from a
// userspace proxy: with Config.DelayProxy, every store's Raft and gRPC
// connections to every other store are redirected (a DNAT rule in the
// sender's namespace) to a listener of the harness on the bridge, one per
// (sender, receiver, port). The harness dials the receiver from inside the
// sender's namespace, so the receiver sees the sender's address and the
// partitions still apply, and copies the bytes each way, each chunk held
// for the link's current delay. Gossip is not proxied.

// proxyMark marks the proxy's own connections so the DNAT rule skips them.
const proxyMark = 0x6266

type link struct {
	from, to *Node
	port     int // the receiver's port
	ln       net.Listener
	delay    atomic.Int64 // nanoseconds
}

type proxy struct {
	c     *Cluster
	links []*link
	wg    sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

func proxyPort(from, to, k int) int { return 20000 + from*400 + to*4 + k }

func (c *Cluster) startProxy(ctx context.Context) error {
	p := &proxy{c: c, conns: map[net.Conn]bool{}}
	c.proxy = p
	for _, from := range c.Stores() {
		for _, to := range c.Stores() {
			if from == to {
				continue
			}
			for k, port := range []int{RaftPort, GRPCPort} {
				listen := fmt.Sprintf("%s:%d", c.hostIP, proxyPort(from.Index, to.Index, k))
				ln, err := net.Listen("tcp", listen)
				if err != nil {
					return fmt.Errorf("delay proxy: %w", err)
				}
				l := &link{from: from, to: to, port: port, ln: ln}
				p.links = append(p.links, l)
				if err := run(ctx, "ip", "netns", "exec", from.NS, "iptables", "-w", "-t", "nat", "-A", "OUTPUT",
					"-p", "tcp", "-d", to.IP, "--dport", fmt.Sprint(port), "-m", "mark", "!", "--mark", fmt.Sprint(proxyMark),
					"-j", "DNAT", "--to-destination", listen); err != nil {
					return err
				}
				p.wg.Add(1)
				go p.accept(l)
			}
		}
	}
	return nil
}

func (p *proxy) track(conn net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		conn.Close()
		return false
	}
	p.conns[conn] = true
	return true
}

func (p *proxy) untrack(conn net.Conn) {
	p.mu.Lock()
	delete(p.conns, conn)
	p.mu.Unlock()
	conn.Close()
}

func (p *proxy) accept(l *link) {
	defer p.wg.Done()
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(in)
			out, err := dialIn(l.from.NS, fmt.Sprintf("%s:%d", l.to.IP, l.port), 3*time.Second)
			if err != nil {
				return
			}
			if !p.track(out) {
				return
			}
			defer p.untrack(out)
			done := make(chan struct{})
			go func() { l.copy(out, in); close(done) }()
			l.copy(in, out)
			<-done
		}()
	}
}

// copy copies src to dst, holding each chunk for the link's delay at the
// time it was read; the order of the bytes is kept. When either side ends,
// both are closed.
func (l *link) copy(dst, src net.Conn) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	ch := make(chan chunk, 256)
	go func() {
		defer close(ch)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(time.Duration(l.delay.Load()))}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	src.Close()
	dst.Close()
	for range ch {
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	for conn := range p.conns {
		conn.Close()
	}
	p.mu.Unlock()
	for _, l := range p.links {
		l.ln.Close()
	}
	p.wg.Wait()
}

// SetDelay holds the bytes from one store to another for d (both ways of
// each connection the sender opens, so a request and its answer are each
// delayed). It needs Config.DelayProxy.
func (c *Cluster) SetDelay(from, to *Node, d time.Duration) error {
	if c.proxy == nil {
		return errors.New("the cluster runs without the delay proxy (Config.DelayProxy)")
	}
	for _, l := range c.proxy.links {
		if l.from == from && l.to == to {
			l.delay.Store(int64(d))
		}
	}
	return nil
}

// ClearDelays removes every delay.
func (c *Cluster) ClearDelays() {
	if c.proxy == nil {
		return
	}
	for _, l := range c.proxy.links {
		l.delay.Store(0)
	}
}

// HasDelayProxy reports whether the cluster's store links run through the
// delay proxy.
func (c *Cluster) HasDelayProxy() bool { return c.proxy != nil }

// dialIn dials addr from inside the network namespace ns, marking the
// socket so the namespace's DNAT rules leave it alone.
func dialIn(ns, addr string, timeout time.Duration) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := setns(target.Fd()); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", ns, err)
	}
	d := net.Dialer{Timeout: timeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, proxyMark)
		})
		return errors.Join(err, serr)
	}}
	// The socket is made on this locked thread, in ns; it stays there.
	conn, dialErr := d.Dial("tcp", addr)
	if err := setns(orig.Fd()); err != nil {
		// This thread is stuck in ns: keep it locked, so that it exits
		// with this goroutine instead of serving others.
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return conn, dialErr
}

func setns(fd uintptr) error { return unix.Setns(int(fd), unix.CLONE_NEWNET) }
