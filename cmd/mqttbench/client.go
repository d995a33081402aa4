package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// version is the protocol the generator speaks: 3.1.1, which every broker
// under comparison speaks and which has the smallest packets.
const version = packet.V311

// ioTimeout bounds each handshake step (CONNACK, SUBACK, the broker closing
// after DISCONNECT).
const ioTimeout = 30 * time.Second

// streamReadBuffer is the read buffer of a connection that streams messages.
const streamReadBuffer = 64 << 10

// flushAt is how many encoded bytes a publisher gathers before writing them
// in one system call.
const flushAt = 8 << 10

// client is one MQTT connection of the generator, a thin layer over the
// codec: writes are gathered in out and sent by flush, reads are decoded in
// place from a buffer that grows only for a connection that streams. The
// reading side and the writing side may run in two goroutines (a QoS 1
// publisher reads PUBACKs while it publishes) as long as only one of them
// touches out.
type client struct {
	nc  net.Conn
	out []byte
	// sessionPresent is the CONNACK's: the broker had kept a session.
	sessionPresent bool

	in         []byte // in[start:end] is read but not decoded
	start, end int
	// beforeRead, if set, runs on the reading goroutine before next blocks
	// in Read: a subscriber sends the PUBACKs of the messages it decoded and
	// publishes its progress there, once per batch instead of per message.
	beforeRead func() error
}

// dial opens a connection and completes CONNECT/CONNACK with a clean session.
func dial(ctx context.Context, addr, clientID string, keepAlive uint16) (*client, error) {
	return dialSession(ctx, addr, clientID, keepAlive, true)
}

// dialSession opens a connection and completes CONNECT/CONNACK; with clean
// false the session is persistent (3.1.1 clean session 0): the broker keeps
// its subscriptions and queues its messages while it is disconnected.
func dialSession(ctx context.Context, addr, clientID string, keepAlive uint16, clean bool) (*client, error) {
	d := net.Dialer{Timeout: ioTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, in: make([]byte, 256)}
	if err := c.handshake(clientID, keepAlive, clean); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *client) handshake(clientID string, keepAlive uint16, clean bool) error {
	if err := c.send(&packet.Connect{CleanStart: clean, KeepAlive: keepAlive, ClientID: clientID}); err != nil {
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	p, err := c.expect(packet.CONNACK)
	if err != nil {
		return err
	}
	ack := p.(*packet.Connack)
	if ack.ReasonCode != 0 {
		return fmt.Errorf("CONNACK return code %d", ack.ReasonCode)
	}
	c.sessionPresent = ack.SessionPresent
	return nil
}

// subscribe sends a SUBSCRIBE for filter at qos; the SUBACK is awaited by
// awaitSuback, so that many connections can subscribe at once.
func (c *client) subscribe(filter string, qos byte) error {
	if err := c.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}}); err != nil {
		return err
	}
	return c.flush()
}

func (c *client) awaitSuback() error {
	p, err := c.expect(packet.SUBACK)
	if err != nil {
		return err
	}
	if codes := p.(*packet.Suback).ReasonCodes; len(codes) != 1 || codes[0] == packet.SubackFailure {
		return fmt.Errorf("subscription refused: SUBACK %v", codes)
	}
	return nil
}

// expect reads the next packet within ioTimeout and checks its type.
func (c *client) expect(t packet.Type) (packet.Packet, error) {
	if err := c.nc.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		return nil, err
	}
	p, err := c.next()
	if err != nil {
		return nil, fmt.Errorf("waiting for %s: %w", t, err)
	}
	if p.Type() != t {
		return nil, fmt.Errorf("got %s, want %s", p.Type(), t)
	}
	return p, c.nc.SetReadDeadline(time.Time{})
}

// await reads packets, within the connection's deadline, until one of type
// t, which it returns; others are skipped.
func (c *client) await(t packet.Type) (packet.Packet, error) {
	for {
		p, err := c.next()
		if err != nil {
			return nil, fmt.Errorf("waiting for %s: %w", t, err)
		}
		if p.Type() == t {
			return p, nil
		}
	}
}

// send encodes p at the end of out.
func (c *client) send(p packet.Packet) error {
	var err error
	c.out, err = packet.Append(c.out, p, version)
	return err
}

// flush writes out.
func (c *client) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.out)
	c.out = c.out[:0]
	return err
}

// streaming gives the connection a read buffer for a stream of messages.
func (c *client) streaming() {
	if len(c.in) < streamReadBuffer {
		in := make([]byte, streamReadBuffer)
		c.end = copy(in, c.in[c.start:c.end])
		c.in, c.start = in, 0
	}
}

// next returns the next packet. Its payload aliases the read buffer and is
// valid only until the next call.
func (c *client) next() (packet.Packet, error) {
	for {
		if c.start < c.end {
			p, n, err := packet.Decode(c.in[c.start:c.end], version)
			if err == nil {
				c.start += n
				return p, nil
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, err
			}
		}
		if c.beforeRead != nil {
			if err := c.beforeRead(); err != nil {
				return nil, err
			}
		}
		// Keep the partial packet at the front; grow for one larger than
		// the buffer.
		c.end = copy(c.in, c.in[c.start:c.end])
		c.start = 0
		if c.end == len(c.in) {
			c.in = append(c.in, make([]byte, len(c.in))...)
		}
		n, err := c.nc.Read(c.in[c.end:])
		c.end += n
		if err != nil && n == 0 {
			return nil, err
		}
	}
}

// disconnectAndWait sends DISCONNECT and waits (ioTimeout at most) for the
// broker to close the connection: then the broker has ended the session's
// connection (a persistent session is offline), and it is the broker that
// closes first, so the generator's side of the socket does not sit in
// TIME_WAIT holding an ephemeral port.
func (c *client) disconnectAndWait() error {
	defer c.nc.Close()
	if err := c.send(&packet.Disconnect{}); err != nil {
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	if err := c.nc.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	for {
		p, err := c.next()
		switch {
		case err == nil && p.Type() == packet.PUBLISH:
			// A message the broker sent before it read the DISCONNECT.
			continue
		case err == nil:
			return fmt.Errorf("got %s after DISCONNECT", p.Type())
		case errors.Is(err, os.ErrDeadlineExceeded):
			return fmt.Errorf("the broker did not close the connection %v after DISCONNECT", ioTimeout)
		}
		return nil // closed (EOF or reset)
	}
}

// disconnect sends DISCONNECT and closes the connection.
func (c *client) disconnect() {
	c.out = c.out[:0]
	if c.send(&packet.Disconnect{}) == nil {
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		c.flush()
	}
	c.nc.Close()
}
