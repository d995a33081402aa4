//go:build !linux

package mqtt

import (
	"log/slog"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// idleConn is a connection's reader state between packets; connections
// do not park on this platform.
type idleConn struct {
	r  *packet.Reader
	lr *lazyReader
}

// awaitPacket sets the keep-alive deadline of the next packet; it never
// parks here.
func (c *conn) awaitPacket() bool {
	c.keepAliveDeadline()
	return false
}

func (c *conn) wake()     {}
func (c *conn) idleGone() {}

// idlePoller is nothing where connections do not park.
type idlePoller struct{}

func (p *idlePoller) stop() {}

func (p *idlePoller) start(*slog.Logger) {}
