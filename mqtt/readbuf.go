package mqtt

import (
	"io"
	"net"
	"sync"
)

// readBuffers lend connections a read buffer while they read a burst.
var readBuffers = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// lazyReader is a buffered reader over a connection that holds no buffer
// while the connection is idle: it waits for the first byte of the next
// burst with a one-byte read, then borrows a pooled buffer to read the rest
// of the burst in bulk, and gives it back once drained. An idle connection
// (the common case for a broker) so costs no read buffer, at the price of
// one more system call per burst.
type lazyReader struct {
	nc   net.Conn
	buf  *[]byte // nil while idle
	r, w int
	// burst is set after a one-byte read: more bytes are on their way, so
	// the next byte comes from a bulk read.
	burst bool
	// have: one[0] is the next byte, read ahead by probe or readOne.
	have bool
	one  [1]byte
	// armed: started is called (once) when the next byte is handed out,
	// the first of a packet (conn.armPacketDeadline).
	armed   bool
	started func()
	// read counts the bytes handed out (the tenant's inbound bandwidth,
	// quota.go).
	read int64
}

// handedOut calls started for the first byte after arming.
func (l *lazyReader) handedOut() {
	if l.armed {
		l.armed = false
		l.started()
	}
}

func newLazyReader(nc net.Conn) *lazyReader { return &lazyReader{nc: nc} }

// ReadByte returns the next byte.
func (l *lazyReader) ReadByte() (byte, error) {
	if l.have {
		l.have, l.burst = false, true
		l.handedOut()
		l.read++
		return l.one[0], nil
	}
	if l.buf == nil {
		if !l.burst {
			n, err := l.nc.Read(l.one[:])
			if n == 1 {
				l.burst = true
				l.handedOut()
				l.read++
				return l.one[0], nil
			}
			if err == nil {
				err = io.ErrNoProgress
			}
			return 0, err
		}
		l.burst = false
		l.buf = readBuffers.Get().(*[]byte)
		n, err := l.nc.Read(*l.buf)
		l.r, l.w = 0, n
		if n == 0 {
			l.release()
			if err == nil {
				err = io.ErrNoProgress
			}
			return 0, err
		}
	}
	b := (*l.buf)[l.r]
	l.r++
	l.release()
	l.handedOut()
	l.read++
	return b, nil
}

// Read reads from the buffer, or straight from the connection once it is
// drained.
func (l *lazyReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if l.have {
		l.have, l.burst = false, true
		p[0] = l.one[0]
		l.handedOut()
		l.read++
		return 1, nil
	}
	if l.buf == nil {
		l.burst = false
		n, err := l.nc.Read(p)
		if n > 0 {
			l.handedOut()
		}
		l.read += int64(n)
		return n, err
	}
	n := copy(p, (*l.buf)[l.r:l.w])
	l.r += n
	l.release()
	l.handedOut()
	l.read += int64(n)
	return n, nil
}

// release gives a drained buffer back.
func (l *lazyReader) release() {
	if l.buf != nil && l.r == l.w {
		readBuffers.Put(l.buf)
		l.buf = nil
		l.r, l.w = 0, 0
	}
}

// buffered says whether bytes are held or on their way.
func (l *lazyReader) buffered() bool { return l.buf != nil || l.burst || l.have }

// readOne waits for the next byte and holds it; false with no error does
// not happen.
func (l *lazyReader) readOne() (bool, error) {
	n, err := l.nc.Read(l.one[:])
	if n == 1 {
		l.have = true
		return true, nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return false, err
}
