package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// ConnectOptions is one CONNECT.
type ConnectOptions struct {
	ClientID string
	Version  packet.Version
	// Clean is 3.x clean session or 5.0 clean start.
	Clean bool
	// SessionExpiry is the 5.0 session expiry interval in seconds (0: the
	// session ends with the connection).
	SessionExpiry uint32
	// ReceiveMaximum is the 5.0 receive maximum (0: the protocol's 65535).
	ReceiveMaximum uint16
	KeepAlive      uint16
	Will           *packet.Will
}

// Delivery is a PUBLISH the server sent. App is false for a QoS 2 resend
// the client dropped because its packet ID is one the client holds as
// received and not yet released (MQTT-4.3.3: the application sees a QoS 2
// message once).
type Delivery struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Dup      bool
	Retain   bool
	PacketID uint16
	App      bool
}

// Session is a client's state that outlives a connection: the QoS 2 packet
// IDs it received and has not seen released. A persistent client keeps one
// Session for all its connections; a clean one starts a fresh one.
type Session struct {
	mu         sync.Mutex
	unreleased map[uint16]bool
}

// NewSession returns an empty client session.
func NewSession() *Session { return &Session{unreleased: map[uint16]bool{}} }

// Conn is one MQTT connection of the harness's clients, on the codec the
// server uses (mqtt/packet). A goroutine reads what the server sends:
// acknowledgements wake the caller waiting for them, a PUBLISH is
// acknowledged as its QoS asks and handed to OnDeliver, a DISCONNECT or the
// end of the stream ends the connection (Done, Reason).
type Conn struct {
	nc      net.Conn
	v       packet.Version
	sess    *Session
	deliver func(Delivery)

	wmu sync.Mutex // one packet written at a time

	mu      sync.Mutex
	nextID  uint16
	waiters map[uint16]chan packet.Packet
	closed  bool
	reason  string

	done chan struct{}
	pong chan struct{}
}

// ErrClosed is returned by calls on a connection that ended; Reason says how.
var ErrClosed = errors.New("mqtt: connection closed")

// Dial opens a connection to addr and sends CONNECT; it returns the
// connection and the CONNACK. A CONNACK that refuses is an error with the
// connection closed. onDeliver (may be nil) is called from the reader
// goroutine for each PUBLISH the server sends, after it is acknowledged as
// far as the client's side goes (PUBACK, or PUBREC for QoS 2).
func Dial(ctx context.Context, addr string, o ConnectOptions, sess *Session, onDeliver func(Delivery)) (*Conn, *packet.Connack, error) {
	if sess == nil {
		sess = NewSession()
	}
	if o.Version == 0 {
		o.Version = packet.V311
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	cp := &packet.Connect{ProtocolName: o.Version.ProtocolName(), Version: o.Version, CleanStart: o.Clean,
		KeepAlive: o.KeepAlive, ClientID: o.ClientID, Will: o.Will}
	if o.Version == packet.V5 {
		if o.SessionExpiry > 0 {
			cp.Properties.SessionExpiryInterval, cp.Properties.HasSessionExpiryInterval = o.SessionExpiry, true
		}
		if o.ReceiveMaximum > 0 {
			cp.Properties.ReceiveMaximum, cp.Properties.HasReceiveMaximum = o.ReceiveMaximum, true
		}
	}
	b, err := packet.Append(nil, cp, o.Version)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if _, err := nc.Write(b); err != nil {
		nc.Close()
		return nil, nil, err
	}
	r := packet.NewReader(nc, 0)
	p, err := r.ReadPacket(o.Version)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("reading CONNACK: %w", err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		nc.Close()
		return nil, nil, fmt.Errorf("expected CONNACK, got %v", p.Type())
	}
	if ack.ReasonCode != 0 {
		nc.Close()
		return nil, ack, fmt.Errorf("%w: CONNACK 0x%02x", ErrRefused, byte(ack.ReasonCode))
	}
	_ = nc.SetDeadline(time.Time{})
	c := &Conn{nc: nc, v: o.Version, sess: sess, deliver: onDeliver, waiters: map[uint16]chan packet.Packet{}, done: make(chan struct{}), pong: make(chan struct{}, 1)}
	go c.read(r)
	return c, ack, nil
}

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Reason says how the connection ended ("" while it runs): "disconnect
// 0x8e" for a server DISCONNECT, "eof", "closed by client", or the read
// error.
func (c *Conn) Reason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

func (c *Conn) end(reason string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.reason = true, reason
	for id, w := range c.waiters {
		close(w)
		delete(c.waiters, id)
	}
	c.mu.Unlock()
	c.nc.Close()
	close(c.done)
}

// Close ends the connection without a DISCONNECT (as a client that dies
// does) and waits for the reader.
func (c *Conn) Close() {
	c.end("closed by client")
	<-c.done
}

// Disconnect sends DISCONNECT (reason 0: normal, the will is not sent) and
// closes.
func (c *Conn) Disconnect() {
	_ = c.write(&packet.Disconnect{})
	c.end("disconnected by client")
}

func (c *Conn) write(p packet.Packet) error {
	b, err := packet.Append(nil, p, c.v)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = c.nc.Write(b)
	return err
}

func (c *Conn) read(r *packet.Reader) {
	for {
		p, err := r.ReadPacket(c.v)
		if err != nil {
			if errors.Is(err, io.EOF) {
				c.end("eof")
			} else {
				c.end(err.Error())
			}
			return
		}
		switch p := p.(type) {
		case *packet.Publish:
			c.onPublish(p)
		case *packet.Pubrel:
			c.sess.mu.Lock()
			delete(c.sess.unreleased, p.PacketID)
			c.sess.mu.Unlock()
			_ = c.write(&packet.Pubcomp{PacketID: p.PacketID})
		case *packet.Puback:
			c.wake(p.PacketID, p)
		case *packet.Pubrec:
			c.wake(p.PacketID, p)
		case *packet.Pubcomp:
			c.wake(p.PacketID, p)
		case *packet.Suback:
			c.wake(p.PacketID, p)
		case *packet.Pingresp:
			select {
			case c.pong <- struct{}{}:
			default:
			}
		case *packet.Disconnect:
			c.end(fmt.Sprintf("disconnect 0x%02x", byte(p.ReasonCode)))
			return
		}
	}
}

func (c *Conn) onPublish(p *packet.Publish) {
	d := Delivery{Topic: p.Topic, Payload: append([]byte(nil), p.Payload...), QoS: p.QoS, Dup: p.Dup, Retain: p.Retain, PacketID: p.PacketID, App: true}
	switch p.QoS {
	case 1:
		// The application has it before the PUBACK goes: a crash between
		// the two leaves a redelivery, never a loss.
		if c.deliver != nil {
			c.deliver(d)
		}
		_ = c.write(&packet.Puback{PacketID: p.PacketID})
		return
	case 2:
		c.sess.mu.Lock()
		d.App = !c.sess.unreleased[p.PacketID]
		c.sess.unreleased[p.PacketID] = true
		c.sess.mu.Unlock()
		if c.deliver != nil {
			c.deliver(d)
		}
		_ = c.write(&packet.Pubrec{PacketID: p.PacketID})
		return
	}
	if c.deliver != nil {
		c.deliver(d)
	}
}

func (c *Conn) wake(id uint16, p packet.Packet) {
	c.mu.Lock()
	w := c.waiters[id]
	c.mu.Unlock()
	if w != nil {
		select {
		case w <- p:
		default:
		}
	}
}

// await registers a waiter for the next packet with a new packet ID.
func (c *Conn) await() (uint16, chan packet.Packet, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, nil, ErrClosed
	}
	for {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if _, used := c.waiters[c.nextID]; !used {
			break
		}
	}
	ch := make(chan packet.Packet, 2)
	c.waiters[c.nextID] = ch
	return c.nextID, ch, nil
}

func (c *Conn) release(id uint16) {
	c.mu.Lock()
	delete(c.waiters, id)
	c.mu.Unlock()
}

func (c *Conn) wait(ctx context.Context, ch chan packet.Packet) (packet.Packet, error) {
	select {
	case p, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrClosed, c.Reason())
		}
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Subscribe subscribes to one filter and returns the SUBACK's reason code.
func (c *Conn) Subscribe(ctx context.Context, filter string, qos byte) (packet.ReasonCode, error) {
	id, ch, err := c.await()
	if err != nil {
		return 0, err
	}
	defer c.release(id)
	if err := c.write(&packet.Subscribe{PacketID: id, Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}}); err != nil {
		return 0, err
	}
	p, err := c.wait(ctx, ch)
	if err != nil {
		return 0, err
	}
	sa, ok := p.(*packet.Suback)
	if !ok || len(sa.ReasonCodes) != 1 {
		return 0, fmt.Errorf("bad SUBACK %v", p)
	}
	return sa.ReasonCodes[0], nil
}

// ErrRefused is a CONNECT or a publish the server answered with an error
// reason code: certainly not done.
var ErrRefused = errors.New("mqtt: publish refused")

// Publish publishes at QoS 1 or 2 and waits for PUBACK, or for PUBREC and
// then PUBCOMP (sending PUBREL between). A nil error means the server
// acknowledged the message; ErrRefused an error reason code; any other
// error leaves the outcome unknown.
func (c *Conn) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	id, ch, err := c.await()
	if err != nil {
		return err
	}
	defer c.release(id)
	if err := c.write(&packet.Publish{QoS: qos, Retain: retain, Topic: topic, PacketID: id, Payload: payload}); err != nil {
		return err
	}
	p, err := c.wait(ctx, ch)
	if err != nil {
		return err
	}
	switch p := p.(type) {
	case *packet.Puback:
		if p.ReasonCode.IsError() {
			return fmt.Errorf("%w: PUBACK 0x%02x", ErrRefused, byte(p.ReasonCode))
		}
		return nil
	case *packet.Pubrec:
		if p.ReasonCode.IsError() {
			return fmt.Errorf("%w: PUBREC 0x%02x", ErrRefused, byte(p.ReasonCode))
		}
		return c.releaseQoS2(ctx, id, ch)
	}
	return fmt.Errorf("unexpected %v", p.Type())
}

// releaseQoS2 ends a QoS 2 exchange whose PUBREC came: PUBREL, then the
// PUBCOMP on ch.
func (c *Conn) releaseQoS2(ctx context.Context, id uint16, ch chan packet.Packet) error {
	if err := c.write(&packet.Pubrel{PacketID: id}); err != nil {
		return err
	}
	p, err := c.wait(ctx, ch)
	if err != nil {
		return err
	}
	if _, ok := p.(*packet.Pubcomp); !ok {
		return fmt.Errorf("expected PUBCOMP, got %v", p.Type())
	}
	return nil
}

// QoS2Flight is an outbound QoS 2 publish of a persistent publisher that
// its connection did not see through: on the next connection it is resumed
// with the same packet ID (MQTT-4.4.0-1), the PUBLISH again with DUP 1 while
// its PUBREC has not come, else the PUBREL.
type QoS2Flight struct {
	ID       uint16
	Topic    string
	Payload  []byte
	Released bool // the PUBREC came: the PUBREL is what is left
}

// PublishQoS2 runs a QoS 2 exchange with f's packet ID, or resumes it
// (resend: the PUBLISH goes with DUP 1), recording its progress in f. Errors
// are as Publish's.
func (c *Conn) PublishQoS2(ctx context.Context, f *QoS2Flight, resend bool) error {
	ch, err := c.awaitID(f.ID)
	if err != nil {
		return err
	}
	defer c.release(f.ID)
	if !f.Released {
		if err := c.write(&packet.Publish{QoS: 2, Dup: resend, Topic: f.Topic, PacketID: f.ID, Payload: f.Payload}); err != nil {
			return err
		}
		p, err := c.wait(ctx, ch)
		if err != nil {
			return err
		}
		rec, ok := p.(*packet.Pubrec)
		if !ok {
			return fmt.Errorf("expected PUBREC, got %v", p.Type())
		}
		if rec.ReasonCode.IsError() {
			return fmt.Errorf("%w: PUBREC 0x%02x", ErrRefused, byte(rec.ReasonCode))
		}
		f.Released = true
	}
	return c.releaseQoS2(ctx, f.ID, ch)
}

// awaitID registers a waiter for packets with a packet ID the caller chose.
func (c *Conn) awaitID(id uint16) (chan packet.Packet, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if _, used := c.waiters[id]; used {
		return nil, fmt.Errorf("packet ID %d in use", id)
	}
	ch := make(chan packet.Packet, 2)
	c.waiters[id] = ch
	return ch, nil
}

// Ping sends PINGREQ and waits for PINGRESP. The server answers a
// connection's packets in order, so what it sent for an earlier packet (the
// retained messages after a SUBACK) has arrived when Ping returns.
func (c *Conn) Ping(ctx context.Context) error {
	select {
	case <-c.pong:
	default:
	}
	if err := c.write(&packet.Pingreq{}); err != nil {
		return err
	}
	select {
	case <-c.pong:
		return nil
	case <-c.done:
		return fmt.Errorf("%w: %s", ErrClosed, c.Reason())
	case <-ctx.Done():
		return ctx.Err()
	}
}
