package listener

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"github.com/coder/websocket"
)

// trackedConn is the conn a handler gets: the transport's conn, which tells
// the Listener when it is closed so that Close does not close it twice and
// the open gauge stays true.
type trackedConn struct {
	net.Conn                 // what the handler reads and writes
	l        *Listener       //
	raw      net.Conn        // the TCP socket underneath
	ws       *websocket.Conn // the WebSocket under Conn, for ws and wss
	remote   net.Addr        // the PROXY header's client address, or nil
	once     sync.Once
}

// Close closes the conn the way its transport does (a TLS close_notify, a
// WebSocket close handshake) and stops tracking it.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// CloseWrite shuts the write side of a TCP or TLS conn (a TLS close_notify
// first), so that its handler can read what the client still sends before
// closing; a WebSocket has no half-close.
func (c *trackedConn) CloseWrite() error {
	if c.ws != nil {
		return errNotPlain
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNotPlain
}

// RemoteAddr is the client's address: the PROXY header's when the
// listener takes one, so that logs, auth and limits see the client and not
// the load balancer.
func (c *trackedConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// closeNow closes the socket without any closing handshake, which could
// wait on a client that does not answer: it is how Listener.Close ends
// connections.
func (c *trackedConn) closeNow() {
	c.abort()
	c.release()
}

// abort closes the socket and marks the WebSocket closed, without the
// bookkeeping of a conn handed to a handler.
func (c *trackedConn) abort() {
	// The socket first: a writer blocked on a full send buffer holds the
	// TLS and WebSocket write locks their own close would wait for.
	_ = c.raw.Close()
	if c.ws != nil {
		_ = c.ws.CloseNow()
	}
}

func (c *trackedConn) release() {
	c.once.Do(func() {
		c.l.untrack(c.raw)
		c.l.m.open.Dec()
	})
}

// errNotPlain: the conn has a TLS or WebSocket layer over its socket.
var errNotPlain = errors.New("listener: not a plain TCP connection")

// SyscallConn gives the socket of a plain TCP connection, so that a handler
// may wait for it to turn readable without a goroutine blocked in Read. It
// fails for TLS and WebSocket connections: their layers may hold input read
// ahead that the socket no longer shows.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok || c.Conn != c.raw {
		return nil, errNotPlain
	}
	return sc.SyscallConn()
}
