package mqtt

import (
	"errors"
	"io"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// parkAfter is how long a connection's reader waits for the next packet
// before it parks: a client that talks more often than that keeps its
// goroutine, and saves the park and the wake-up.
var parkAfter = 100 * time.Millisecond

// idleConn is a connection's reader state between packets, and its
// parking.
//
// Ownership: the reader state (all but state and deadline) belongs to one
// goroutine at a time. The reader that parks gives it up by storing
// parked, and touches nothing of the connection afterwards; wake takes it
// by swapping parked back, and hands it to the goroutine it starts.
type idleConn struct {
	r  *packet.Reader
	lr *lazyReader

	// rc is the socket of a plain TCP connection, which can park; nil for
	// the others (TLS and WebSocket may hold read-ahead the socket does not
	// show), and until looked up (checked).
	rc      syscall.RawConn
	checked bool
	// resumed: the reader was just woken, the keep-alive deadline of the
	// packet it waits for is already set.
	resumed bool
	state   atomic.Uint32 // parked or not
	token   uint64        // in the poller, from the first park
	// deadline is the keep-alive deadline of the next packet (monoNow's
	// clock), 0 for none; the poller's sweep wakes a parked connection
	// past it.
	deadline atomic.Int64
}

const (
	running uint32 = iota
	parked
)

// awaitPacket sets the keep-alive deadline of the next packet and, when
// none has begun to arrive within parkAfter, parks the connection: true
// means the caller's goroutine must return and leave the connection alone.
func (c *conn) awaitPacket() bool {
	in := &c.idle
	resumed := in.resumed
	in.resumed = false
	if !resumed {
		d := c.keepAliveDeadline()
		in.deadline.Store(mono(d))
		if !in.checked {
			in.checked = true
			in.rc = rawConnOf(c.nc)
		}
		if in.rc == nil || c.s.idle.p.Load() == nil || in.lr.buffered() {
			return false
		}
		// Something to read (or an error): ReadPacket takes it.
		if got, err := in.lr.probe(in.rc); got || err != nil {
			return false
		}
		if parkAfter > 0 {
			// A short blocking wait first.
			wait := time.Now().Add(parkAfter)
			if !d.IsZero() && d.Before(wait) {
				wait = d
			}
			_ = c.nc.SetReadDeadline(wait)
			got, err := in.lr.readOne()
			_ = c.nc.SetReadDeadline(d)
			var ne interface{ Timeout() bool }
			if got || err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				return false
			}
		}
	} else if got, err := in.lr.probe(in.rc); got || err != nil {
		// Woken by data, or by a close (the error).
		return false
	}
	if dl := in.deadline.Load(); dl != 0 && monoNow() >= dl {
		return false // ReadPacket times out
	}
	return c.park() // afresh after a spurious wake-up too
}

// park hands the connection to the poller; false: it could not, the
// caller reads on.
func (c *conn) park() bool {
	p := c.s.idle.p.Load()
	if p == nil {
		return false
	}
	in := &c.idle
	if in.token == 0 {
		p.add(c)
	}
	// The readers hold nothing between packets: made afresh on resume,
	// they cost a parked connection nothing.
	r, lr := in.r, in.lr
	in.r, in.lr = nil, nil
	rc, tok := in.rc, in.token
	in.state.Store(parked)
	// From here on the connection may be running in another goroutine.
	if err := p.arm(rc, tok); err != nil {
		// Closed: read on here, unless a wake took the connection already.
		if in.state.CompareAndSwap(parked, running) {
			in.r, in.lr = r, lr
			return false
		}
	}
	return true
}

// wake resumes a parked connection in a new goroutine; it does nothing to
// one that is not parked. Its callers: the poller (readable, or past the
// keep-alive deadline), and whoever closes the connection from outside its
// reader.
func (c *conn) wake() {
	if c.idle.state.CompareAndSwap(parked, running) {
		go c.resume()
	}
}

func (c *conn) resume() {
	in := &c.idle
	in.lr = newLazyReader(c.nc)
	in.r = packet.NewReader(in.lr, c.s.cfg.MaxPacketSize)
	in.resumed = true
	c.readOn()
}

// idleGone releases what parking held, once the connection ended.
func (c *conn) idleGone() {
	if c.idle.token != 0 {
		if p := c.s.idle.p.Load(); p != nil {
			p.forget(c.idle.token)
		}
	}
}

// monoEpoch starts the monotonic clock of keep-alive deadlines.
var monoEpoch = time.Now()

// monoNow is the time on the deadlines' clock.
func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// mono is t on the deadlines' clock; 0 for the zero Time.
func mono(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(monoEpoch)), 1)
}

// rawConnOf is the socket of a connection that may park: plain TCP.
// The listener's conns say whether they are (listener.trackedConn).
func rawConnOf(nc any) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// probe reads the next byte if one is there, without waiting. false and
// no error: nothing to read yet.
func (l *lazyReader) probe(rc syscall.RawConn) (bool, error) {
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), l.one[:])
			if rerr != unix.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil:
		return false, err
	case rerr == unix.EAGAIN:
		return false, nil
	case rerr != nil:
		return false, rerr
	case n == 0:
		return false, io.EOF
	}
	l.have = true
	return true, nil
}
