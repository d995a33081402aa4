package mqtt

import (
	"errors"
	"time"
)

// An idle connection, on a platform that can (idle_linux.go), parks: its
// reader goroutine returns, the socket is watched by the server's poller,
// and a new goroutine picks the reading up when the socket turns readable,
// the keep-alive deadline passes, or the connection is closed from
// elsewhere (wake). Elsewhere, and for TLS and WebSocket connections, the
// reader simply blocks in Read.

// errParked ends a read loop whose connection parked: it goes on, and its
// reader state belongs to whichever goroutine wakes it.
var errParked = errors.New("parked")

// readOn reads packets until the connection ends, then tears it down; or
// until it parks, then leaves it to the goroutine that wakes it.
func (c *conn) readOn() {
	err := c.readLoop(c.idle.r)
	if err == errParked {
		return
	}
	c.end(err)
	c.emitEnd(err)
	c.s.m.connections.Dec()
	c.finish()
}

// finish is the last step of every connection, parked in between or not.
func (c *conn) finish() {
	// Released before the close, so that a client that sees its
	// connection closed may connect again in its place.
	c.release()
	c.nc.Close()
	c.idleGone()
	close(c.done)
	c.s.connEnded(c)
}

// keepAliveDeadline sets the read deadline for the next packet and returns
// it; zero when there is no keep-alive.
func (c *conn) keepAliveDeadline() time.Time {
	var d time.Time
	if c.keepAlive > 0 {
		// MQTT-3.1.2-24: one and a half keep-alive periods.
		d = time.Now().Add(c.keepAlive * 3 / 2)
	}
	_ = c.nc.SetReadDeadline(d)
	return d
}
