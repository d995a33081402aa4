package packet

import (
	"errors"
	"fmt"
	"io"
)

// ErrVersion is returned for a version argument this package does not
// speak (a programming error, not a peer's).
var ErrVersion = errors.New("mqtt packet: unknown protocol version")

// checkFixed checks the first byte of a packet before anything else is
// read: the type exists in version v, its flag bits are the ones the
// specification fixes (section 2.1.3), and the connection is in a state to
// receive it (v == 0: nothing but a CONNECT yet).
func checkFixed(b0 byte, v Version) *Error {
	t, flags := Type(b0>>4), b0&0x0f
	fail := func(code ReasonCode, format string, args ...any) *Error {
		return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Type: t, Version: v}
	}
	switch {
	case t == 0:
		return fail(MalformedPacket, "2.1.2: reserved packet type 0")
	case v == 0 && t != CONNECT:
		return fail(ProtocolError, "MQTT-3.1.0-1: the first packet must be CONNECT")
	case v != 0 && t == CONNECT:
		return fail(ProtocolError, "MQTT-3.1.0-2: second CONNECT")
	case t == AUTH && v != V5:
		return fail(MalformedPacket, "2.2.1 (3.1.1): reserved packet type 15")
	}
	switch t {
	case PUBLISH:
		if flags&0x06 == 0x06 {
			return fail(MalformedPacket, "MQTT-3.3.1-4: QoS 3")
		}
		if flags&0x08 != 0 && flags&0x06 == 0 {
			return fail(MalformedPacket, "MQTT-3.3.1-2: DUP set on a QoS 0 message")
		}
	case PUBREL, SUBSCRIBE, UNSUBSCRIBE:
		if flags != 0x02 {
			rule := map[Type]string{PUBREL: "MQTT-3.6.1-1", SUBSCRIBE: "MQTT-3.8.1-1", UNSUBSCRIBE: "MQTT-3.10.1-1"}[t]
			return fail(MalformedPacket, "%s: fixed header flags 0x%x, must be 0x2", rule, flags)
		}
	default:
		if flags != 0 {
			return fail(MalformedPacket, "MQTT-2.1.3-1 (3.1.1: MQTT-2.2.2-1): fixed header flags 0x%x, must be 0", flags)
		}
	}
	return nil
}

// Decode decodes one packet from buf, which starts with its fixed header,
// and returns it with the number of bytes it took; bytes after it are left
// alone. The rules are ReadPacket's. Payload, Password, the will payload,
// CorrelationData and AuthenticationData alias buf (zero-copy): keep buf
// unchanged while they are used. If buf holds less than a whole packet the
// error is io.ErrUnexpectedEOF (io.EOF when buf is empty), not an *Error.
func Decode(buf []byte, v Version) (Packet, int, error) {
	if v != 0 && !v.Valid() {
		return nil, 0, ErrVersion
	}
	if len(buf) == 0 {
		return nil, 0, io.EOF
	}
	if e := checkFixed(buf[0], v); e != nil {
		return nil, 0, e
	}
	var rl uint32
	n := 1
	for ; ; n++ {
		if n > 4 {
			return nil, 0, &Error{Code: MalformedPacket, Msg: "MQTT-1.5.5 (3.1.1: 2.2.3): remaining length longer than 4 bytes", Type: Type(buf[0] >> 4), Version: v}
		}
		if n >= len(buf) {
			return nil, 0, io.ErrUnexpectedEOF
		}
		c := buf[n]
		rl |= uint32(c&0x7f) << (7 * (n - 1))
		if c&0x80 == 0 {
			n++
			break
		}
	}
	if uint64(len(buf)-n) < uint64(rl) {
		return nil, 0, io.ErrUnexpectedEOF
	}
	total := n + int(rl)
	p, err := decodeBody(buf[0], buf[n:total], v)
	if err != nil {
		return nil, 0, err
	}
	return p, total, nil
}

// decodeBody decodes the variable header and payload of a packet whose
// first byte b0 passed checkFixed.
func decodeBody(b0 byte, body []byte, v Version) (Packet, error) {
	d := &decoder{b: body, t: Type(b0 >> 4), v: v}
	var p Packet
	switch d.t {
	case CONNECT:
		p = d.connect()
	case CONNACK:
		p = d.connack()
	case PUBLISH:
		p = d.publish(b0)
	case PUBACK:
		a := &Puback{}
		d.ack(&a.PacketID, &a.ReasonCode, &a.Properties, pubackCodes)
		p = a
	case PUBREC:
		a := &Pubrec{}
		d.ack(&a.PacketID, &a.ReasonCode, &a.Properties, pubackCodes)
		p = a
	case PUBREL:
		a := &Pubrel{}
		d.ack(&a.PacketID, &a.ReasonCode, &a.Properties, pubrelCodes)
		p = a
	case PUBCOMP:
		a := &Pubcomp{}
		d.ack(&a.PacketID, &a.ReasonCode, &a.Properties, pubrelCodes)
		p = a
	case SUBSCRIBE:
		p = d.subscribe()
	case SUBACK:
		p = d.suback()
	case UNSUBSCRIBE:
		p = d.unsubscribe()
	case UNSUBACK:
		p = d.unsuback()
	case PINGREQ:
		p = &Pingreq{}
	case PINGRESP:
		p = &Pingresp{}
	case DISCONNECT:
		a := &Disconnect{}
		d.short5(&a.ReasonCode, &a.Properties, disconnectCodes, ctxDisconnect)
		p = a
	case AUTH:
		a := &Auth{}
		d.short5(&a.ReasonCode, &a.Properties, authCodes, ctxAuth)
		p = a
	}
	if d.e == nil && len(d.b) > 0 {
		d.fail(MalformedPacket, "%d bytes after the last field (remaining length %d)", len(d.b), len(body))
	}
	if d.e != nil {
		return nil, d.e
	}
	return p, nil
}

func (d *decoder) connect() *Connect {
	name := d.raw("protocol name")
	level := Version(d.u8("protocol level"))
	if d.e != nil {
		return nil
	}
	if !level.Valid() || string(name) != level.ProtocolName() {
		// 3.1.1 MQTT-3.1.2-2 says the server answers CONNACK 0x01;
		// 5.0 MQTT-3.1.2-2 says 0x84. The server picks by Error.Version == 0.
		d.fail(UnsupportedProtocolVersion, "MQTT-3.1.2-1, MQTT-3.1.2-2: protocol name %q, level %d", name, byte(level))
		return nil
	}
	d.v = level
	c := &Connect{ProtocolName: string(name), Version: level}
	flags := d.u8("connect flags")
	c.KeepAlive = d.u16("keep alive")
	if d.e != nil {
		return nil
	}
	willFlag, willQoS, willRetain := flags&0x04 != 0, flags>>3&3, flags&0x20 != 0
	c.CleanStart = flags&0x02 != 0
	c.PasswordFlag = flags&0x40 != 0
	c.UsernameFlag = flags&0x80 != 0
	switch {
	case flags&0x01 != 0:
		d.fail(MalformedPacket, "MQTT-3.1.2-3: reserved connect flag set")
	case !willFlag && willQoS != 0:
		d.fail(MalformedPacket, "MQTT-3.1.2-11 (3.1.1: MQTT-3.1.2-11, MQTT-3.1.2-13): will QoS %d without the will flag", willQoS)
	case !willFlag && willRetain:
		d.fail(MalformedPacket, "MQTT-3.1.2-13 (3.1.1: MQTT-3.1.2-11, MQTT-3.1.2-15): will retain without the will flag")
	case willQoS == 3:
		d.fail(MalformedPacket, "MQTT-3.1.2-12 (3.1.1: MQTT-3.1.2-14): will QoS 3")
	case level < V5 && c.PasswordFlag && !c.UsernameFlag:
		d.fail(MalformedPacket, "MQTT-3.1.2-22: password flag without the user name flag")
	}
	if level == V5 {
		d.props(&c.Properties, ctxConnect)
	}
	c.ClientID = d.str("client identifier")
	if willFlag {
		w := &Will{QoS: willQoS, Retain: willRetain}
		if level == V5 {
			d.props(&w.Properties, ctxWill)
		}
		w.Topic = d.str("will topic")
		w.Payload = d.binary("will payload")
		c.Will = w
	}
	if c.UsernameFlag {
		c.Username = d.str("user name")
	}
	if c.PasswordFlag {
		c.Password = d.binary("password")
	}
	return c
}

func (d *decoder) connack() *Connack {
	c := &Connack{}
	flags := d.u8("connect acknowledge flags")
	c.ReasonCode = ReasonCode(d.u8("reason code"))
	if d.e != nil {
		return nil
	}
	switch {
	case d.v == V31:
		// 3.1 has no session present flag: the byte is unused.
	case flags&^1 != 0:
		d.fail(MalformedPacket, "3.2.2.1: reserved connect acknowledge flags 0x%02x", flags)
	default:
		c.SessionPresent = flags == 1
	}
	switch {
	case d.v == V5 && !connackCodes.has(c.ReasonCode):
		d.fail(MalformedPacket, "MQTT-3.2.2-8: 0x%02x is not a CONNACK reason code", byte(c.ReasonCode))
	case d.v != V5 && c.ReasonCode > ConnRefusedNotAuthorized:
		d.fail(MalformedPacket, "3.2.2.3 (3.1.1): reserved return code %d", byte(c.ReasonCode))
	case c.SessionPresent && c.ReasonCode != 0:
		d.fail(ProtocolError, "MQTT-3.2.2-6 (3.1.1: MQTT-3.2.2-4): session present with a refusal")
	}
	if d.v == V5 {
		d.props(&c.Properties, ctxConnack)
	}
	return c
}

func (d *decoder) publish(b0 byte) *Publish {
	p := &Publish{Dup: b0&0x08 != 0, QoS: b0 >> 1 & 3, Retain: b0&0x01 != 0}
	p.Topic = d.str("topic name")
	if p.QoS > 0 {
		p.PacketID = d.packetID()
	}
	if d.v == V5 {
		d.props(&p.Properties, ctxPublish)
	}
	if d.e == nil && p.Topic == "" && !p.Properties.HasTopicAlias {
		// 5.0 allows an empty topic name only with a topic alias.
		d.fail(ProtocolError, "3.3.2.1 (3.1.1: MQTT-4.7.3-1): empty topic name without a topic alias")
	}
	p.Payload = d.rest()
	return p
}

// ack decodes PUBACK, PUBREC, PUBREL and PUBCOMP. In MQTT 5 the reason code
// may be left out (remaining length 2: success) and so may the properties
// (remaining length 3).
func (d *decoder) ack(id *uint16, rc *ReasonCode, p *Properties, set *reasonSet) {
	*id = d.packetID()
	if d.v != V5 || d.e != nil || len(d.b) == 0 {
		return
	}
	*rc = d.reason(set)
	if len(d.b) > 0 {
		d.props(p, ctxPuback)
	}
}

// short5 decodes DISCONNECT and AUTH, which in MQTT 5 may leave out the
// properties (remaining length 1) or everything (0: success).
func (d *decoder) short5(rc *ReasonCode, p *Properties, set *reasonSet, ctx propCtx) {
	if d.v != V5 || len(d.b) == 0 {
		return
	}
	*rc = d.reason(set)
	if len(d.b) > 0 {
		d.props(p, ctx)
	}
}

func (d *decoder) subscribe() *Subscribe {
	s := &Subscribe{PacketID: d.packetID()}
	if d.v == V5 {
		d.props(&s.Properties, ctxSubscribe)
	}
	if d.e == nil && len(d.b) == 0 {
		d.fail(ProtocolError, "MQTT-3.8.3-2 (3.1.1: MQTT-3.8.3-3): no topic filter")
	}
	for len(d.b) > 0 && d.e == nil {
		f := d.str("topic filter")
		o := d.u8("subscription options")
		if d.e != nil {
			break
		}
		sub := Subscription{Filter: f, QoS: o & 3}
		if d.v == V5 {
			sub.NoLocal = o&0x04 != 0
			sub.RetainAsPublished = o&0x08 != 0
			sub.RetainHandling = o >> 4 & 3
			switch {
			case o&0xc0 != 0:
				d.fail(MalformedPacket, "MQTT-3.8.3-5: reserved subscription option bits 0x%02x", o&0xc0)
			case sub.QoS == 3:
				d.fail(ProtocolError, "3.8.3.1: maximum QoS 3")
			case sub.RetainHandling == 3:
				d.fail(ProtocolError, "3.8.3.1: retain handling 3")
			}
		} else if o&^3 != 0 || sub.QoS == 3 {
			d.fail(MalformedPacket, "MQTT-3-8.3-4: requested QoS byte 0x%02x (reserved bits or QoS 3)", o)
		}
		s.Subscriptions = append(s.Subscriptions, sub)
	}
	return s
}

func (d *decoder) codes(set *reasonSet) []ReasonCode {
	if d.e != nil {
		return nil
	}
	if len(d.b) == 0 {
		d.fail(ProtocolError, "%s: no reason codes", ackRule[d.t])
		return nil
	}
	cs := make([]ReasonCode, len(d.b))
	for i := range cs {
		cs[i] = d.reason(set)
	}
	return cs
}

func (d *decoder) suback() *Suback {
	s := &Suback{PacketID: d.packetID()}
	set := subackCodes3
	if d.v == V5 {
		d.props(&s.Properties, ctxSuback)
		set = subackCodes
	}
	s.ReasonCodes = d.codes(set)
	return s
}

func (d *decoder) unsubscribe() *Unsubscribe {
	u := &Unsubscribe{PacketID: d.packetID()}
	if d.v == V5 {
		d.props(&u.Properties, ctxUnsubscribe)
	}
	if d.e == nil && len(d.b) == 0 {
		d.fail(ProtocolError, "MQTT-3.10.3-2: no topic filter")
	}
	for len(d.b) > 0 && d.e == nil {
		u.Filters = append(u.Filters, d.str("topic filter"))
	}
	return u
}

func (d *decoder) unsuback() *Unsuback {
	u := &Unsuback{PacketID: d.packetID()}
	if d.v == V5 {
		d.props(&u.Properties, ctxSuback)
		u.ReasonCodes = d.codes(unsubackCodes)
	}
	return u
}
