package packet

// Append appends the wire form of p for version v to dst and returns the
// extended slice. Properties are written only for V5; fields a version
// lacks are dropped (reason codes and properties in 3.x, SessionPresent in
// 3.1, subscription options other than QoS in 3.x). A packet Decode would
// refuse is refused with an *Error and dst is returned unchanged: QoS 3, a
// string over 65535 bytes or not UTF-8, a property the packet may not carry,
// a packet identifier 0, a reason code the packet may not carry, AUTH in
// 3.x, a remaining length over 268435455.
//
// For a *Connect, v == 0 means Connect.Version. Append does not allocate
// beyond growing dst.
func Append(dst []byte, p Packet, v Version) ([]byte, error) {
	if c, ok := p.(*Connect); ok && v == 0 {
		v = c.Version
	}
	if !v.Valid() {
		return dst, ErrVersion
	}
	var out []byte
	var e *Error
	switch p := p.(type) {
	case *Publish:
		out, e = appendPublish(dst, p, v)
	case *Connect:
		out, e = appendConnect(dst, p, v)
	case *Connack:
		out, e = appendConnack(dst, p, v)
	case *Puback:
		out, e = appendAck(dst, PUBACK, p.PacketID, p.ReasonCode, &p.Properties, v)
	case *Pubrec:
		out, e = appendAck(dst, PUBREC, p.PacketID, p.ReasonCode, &p.Properties, v)
	case *Pubrel:
		out, e = appendAck(dst, PUBREL, p.PacketID, p.ReasonCode, &p.Properties, v)
	case *Pubcomp:
		out, e = appendAck(dst, PUBCOMP, p.PacketID, p.ReasonCode, &p.Properties, v)
	case *Subscribe:
		out, e = appendSubscribe(dst, p, v)
	case *Suback:
		out, e = appendSuback(dst, p, v)
	case *Unsubscribe:
		out, e = appendUnsubscribe(dst, p, v)
	case *Unsuback:
		out, e = appendUnsuback(dst, p, v)
	case *Pingreq:
		out = append(dst, byte(PINGREQ)<<4, 0)
	case *Pingresp:
		out = append(dst, byte(PINGRESP)<<4, 0)
	case *Disconnect:
		out, e = appendShort5(dst, DISCONNECT, p.ReasonCode, &p.Properties, v)
	case *Auth:
		out, e = appendShort5(dst, AUTH, p.ReasonCode, &p.Properties, v)
	default:
		return dst, &Error{Code: MalformedPacket, Msg: "not a packet of this package", Version: v}
	}
	if e != nil {
		return dst, e
	}
	return out, nil
}

// Size is the encoded size of p for v, as Append would write it (to
// enforce a peer's Maximum Packet Size before sending). The size of a packet
// Append refuses is meaningless but computed without panicking.
func Size(p Packet, v Version) int {
	if c, ok := p.(*Connect); ok && v == 0 {
		v = c.Version
	}
	var rl int
	switch p := p.(type) {
	case *Publish:
		rl, _, _ = sizePublish(p, v)
	case *Connect:
		rl, _, _ = sizeConnect(p, v)
	case *Connack:
		rl, _, _ = sizeConnack(p, v)
	case *Puback:
		rl, _, _ = sizeAck(p.ReasonCode, &p.Properties, v)
	case *Pubrec:
		rl, _, _ = sizeAck(p.ReasonCode, &p.Properties, v)
	case *Pubrel:
		rl, _, _ = sizeAck(p.ReasonCode, &p.Properties, v)
	case *Pubcomp:
		rl, _, _ = sizeAck(p.ReasonCode, &p.Properties, v)
	case *Subscribe:
		rl, _, _ = sizeSubscribe(p, v)
	case *Suback:
		rl, _, _ = sizeSuback(p, v)
	case *Unsubscribe:
		rl, _, _ = sizeUnsubscribe(p, v)
	case *Unsuback:
		rl, _, _ = sizeUnsuback(p, v)
	case *Disconnect:
		rl, _, _ = sizeShort5(p.ReasonCode, &p.Properties, v)
	case *Auth:
		rl, _, _ = sizeShort5(p.ReasonCode, &p.Properties, v)
	}
	return 1 + vbiLen(uint32(min(rl, maxVBI))) + rl
}

// header appends the fixed header after checking the remaining length.
func (e *encoder) header(dst []byte, b0 byte, rl int) []byte {
	if rl > maxVBI {
		e.fail(PacketTooLarge, "2.1.4: remaining length over 268435455")
		return dst
	}
	return appendVBI(append(dst, b0), uint32(rl))
}

func sizePublish(p *Publish, v Version) (rl, pl int, m propMask) {
	rl = 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		rl += 2
	}
	if v == V5 {
		m, pl = p.Properties.measure()
		rl += propsLen(pl)
	}
	return rl, pl, m
}

func appendPublish(dst []byte, p *Publish, v Version) ([]byte, *Error) {
	e := encoder{t: PUBLISH, v: v}
	rl, pl, m := sizePublish(p, v)
	switch {
	case p.QoS > 2:
		e.fail(MalformedPacket, "MQTT-3.3.1-4: QoS 3")
	case p.Dup && p.QoS == 0:
		e.fail(MalformedPacket, "MQTT-3.3.1-2: DUP set on a QoS 0 message")
	case p.QoS > 0:
		e.packetID(p.PacketID)
	}
	e.str(p.Topic)
	if v == V5 {
		p.Properties.check(&e, ctxPublish, m)
	}
	if p.Topic == "" && (v != V5 || !p.Properties.HasTopicAlias) {
		e.fail(ProtocolError, "3.3.2.1: empty topic name without a topic alias")
	}
	b0 := byte(PUBLISH)<<4 | p.QoS<<1
	if p.Dup {
		b0 |= 0x08
	}
	if p.Retain {
		b0 |= 0x01
	}
	out := e.header(dst, b0, rl)
	if e.e != nil {
		return dst, e.e
	}
	out = appendStr(out, p.Topic)
	if p.QoS > 0 {
		out = appendU16(out, p.PacketID)
	}
	if v == V5 {
		out = p.Properties.appendTo(out, pl)
	}
	return append(out, p.Payload...), nil
}

func sizeConnect(c *Connect, v Version) (rl, pl, wpl int) {
	name := c.ProtocolName
	if name == "" {
		name = v.ProtocolName()
	}
	rl = 2 + len(name) + 1 + 1 + 2 + 2 + len(c.ClientID)
	if v == V5 {
		_, pl = c.Properties.measure()
		rl += propsLen(pl)
	}
	if w := c.Will; w != nil {
		rl += 2 + len(w.Topic) + 2 + len(w.Payload)
		if v == V5 {
			_, wpl = w.Properties.measure()
			rl += propsLen(wpl)
		}
	}
	if c.UsernameFlag {
		rl += 2 + len(c.Username)
	}
	if c.PasswordFlag {
		rl += 2 + len(c.Password)
	}
	return rl, pl, wpl
}

func appendConnect(dst []byte, c *Connect, v Version) ([]byte, *Error) {
	e := encoder{t: CONNECT, v: v}
	rl, pl, wpl := sizeConnect(c, v)
	name := c.ProtocolName
	if name == "" {
		name = v.ProtocolName()
	}
	level := c.Version
	if level == 0 {
		level = v
	}
	// The name is not checked beyond its length: tests send wrong ones.
	if len(name) > 65535 {
		e.fail(MalformedPacket, "1.5.4: protocol name longer than 65535 bytes")
	}
	var flags byte
	if c.CleanStart {
		flags |= 0x02
	}
	if w := c.Will; w != nil {
		if w.QoS > 2 {
			e.fail(MalformedPacket, "MQTT-3.1.2-12: will QoS 3")
		}
		flags |= 0x04 | w.QoS<<3
		if w.Retain {
			flags |= 0x20
		}
		e.str(w.Topic)
		e.bin(w.Payload)
		if v == V5 {
			m, _ := w.Properties.measure()
			w.Properties.check(&e, ctxWill, m)
		}
	}
	if c.UsernameFlag {
		flags |= 0x80
		e.str(c.Username)
	} else if c.Username != "" {
		e.fail(MalformedPacket, "MQTT-3.1.2-16: user name without the user name flag")
	}
	if c.PasswordFlag {
		flags |= 0x40
		e.bin(c.Password)
		if v < V5 && !c.UsernameFlag {
			e.fail(MalformedPacket, "MQTT-3.1.2-22: password flag without the user name flag")
		}
	} else if len(c.Password) > 0 {
		e.fail(MalformedPacket, "MQTT-3.1.2-18: password without the password flag")
	}
	e.str(c.ClientID)
	if v == V5 {
		m, _ := c.Properties.measure()
		c.Properties.check(&e, ctxConnect, m)
	}
	out := e.header(dst, byte(CONNECT)<<4, rl)
	if e.e != nil {
		return dst, e.e
	}
	out = appendStr(out, name)
	out = append(out, byte(level), flags)
	out = appendU16(out, c.KeepAlive)
	if v == V5 {
		out = c.Properties.appendTo(out, pl)
	}
	out = appendStr(out, c.ClientID)
	if w := c.Will; w != nil {
		if v == V5 {
			out = w.Properties.appendTo(out, wpl)
		}
		out = appendStr(out, w.Topic)
		out = appendBin(out, w.Payload)
	}
	if c.UsernameFlag {
		out = appendStr(out, c.Username)
	}
	if c.PasswordFlag {
		out = appendBin(out, c.Password)
	}
	return out, nil
}

func sizeConnack(c *Connack, v Version) (rl, pl int, m propMask) {
	rl = 2
	if v == V5 {
		m, pl = c.Properties.measure()
		rl += propsLen(pl)
	}
	return rl, pl, m
}

func appendConnack(dst []byte, c *Connack, v Version) ([]byte, *Error) {
	e := encoder{t: CONNACK, v: v}
	rl, pl, m := sizeConnack(c, v)
	var flags byte
	if c.SessionPresent && v != V31 {
		flags = 1
	}
	if v == V5 {
		e.reason(connackCodes, c.ReasonCode)
		c.Properties.check(&e, ctxConnack, m)
	} else if c.ReasonCode > ConnRefusedNotAuthorized {
		e.fail(MalformedPacket, "3.2.2.3 (3.1.1): reserved return code")
	}
	if flags != 0 && c.ReasonCode != 0 {
		e.fail(ProtocolError, "MQTT-3.2.2-6: session present with a refusal")
	}
	out := e.header(dst, byte(CONNACK)<<4, rl)
	if e.e != nil {
		return dst, e.e
	}
	out = append(out, flags, byte(c.ReasonCode))
	if v == V5 {
		out = c.Properties.appendTo(out, pl)
	}
	return out, nil
}

// sizeAck sizes PUBACK, PUBREC, PUBREL and PUBCOMP, leaving out what MQTT 5
// lets be left out: the properties when there are none, and the reason code
// too when it is success.
func sizeAck(rc ReasonCode, p *Properties, v Version) (rl, pl int, m propMask) {
	if v != V5 {
		return 2, 0, 0
	}
	m, pl = p.measure()
	switch {
	case pl > 0:
		return 3 + propsLen(pl), pl, m
	case rc != Success:
		return 3, 0, m
	}
	return 2, 0, m
}

func appendAck(dst []byte, t Type, id uint16, rc ReasonCode, p *Properties, v Version) ([]byte, *Error) {
	e := encoder{t: t, v: v}
	rl, pl, m := sizeAck(rc, p, v)
	e.packetID(id)
	if v == V5 {
		set := pubackCodes
		if t == PUBREL || t == PUBCOMP {
			set = pubrelCodes
		}
		e.reason(set, rc)
		p.check(&e, ctxPuback, m)
	}
	b0 := byte(t) << 4
	if t == PUBREL {
		b0 |= 0x02
	}
	out := e.header(dst, b0, rl)
	if e.e != nil {
		return dst, e.e
	}
	out = appendU16(out, id)
	if rl > 2 {
		out = append(out, byte(rc))
	}
	if rl > 3 {
		out = p.appendTo(out, pl)
	}
	return out, nil
}

func sizeSubscribe(s *Subscribe, v Version) (rl, pl int, m propMask) {
	rl = 2
	if v == V5 {
		m, pl = s.Properties.measure()
		rl += propsLen(pl)
	}
	for _, sub := range s.Subscriptions {
		rl += 2 + len(sub.Filter) + 1
	}
	return rl, pl, m
}

func appendSubscribe(dst []byte, s *Subscribe, v Version) ([]byte, *Error) {
	e := encoder{t: SUBSCRIBE, v: v}
	rl, pl, m := sizeSubscribe(s, v)
	e.packetID(s.PacketID)
	if v == V5 {
		s.Properties.check(&e, ctxSubscribe, m)
	}
	if len(s.Subscriptions) == 0 {
		e.fail(ProtocolError, "MQTT-3.8.3-2: no topic filter")
	}
	for _, sub := range s.Subscriptions {
		e.str(sub.Filter)
		switch {
		case sub.QoS > 2 && v == V5:
			e.fail(ProtocolError, "3.8.3.1: maximum QoS 3")
		case sub.QoS > 2:
			e.fail(MalformedPacket, "MQTT-3-8.3-4: requested QoS 3")
		case v == V5 && sub.RetainHandling > 2:
			e.fail(ProtocolError, "3.8.3.1: retain handling 3")
		}
	}
	out := e.header(dst, byte(SUBSCRIBE)<<4|0x02, rl)
	if e.e != nil {
		return dst, e.e
	}
	out = appendU16(out, s.PacketID)
	if v == V5 {
		out = s.Properties.appendTo(out, pl)
	}
	for _, sub := range s.Subscriptions {
		o := sub.QoS
		if v == V5 {
			o |= sub.RetainHandling << 4
			if sub.NoLocal {
				o |= 0x04
			}
			if sub.RetainAsPublished {
				o |= 0x08
			}
		}
		out = append(appendStr(out, sub.Filter), o)
	}
	return out, nil
}

func sizeSuback(s *Suback, v Version) (rl, pl int, m propMask) {
	rl = 2 + len(s.ReasonCodes)
	if v == V5 {
		m, pl = s.Properties.measure()
		rl += propsLen(pl)
	}
	return rl, pl, m
}

func appendSuback(dst []byte, s *Suback, v Version) ([]byte, *Error) {
	e := encoder{t: SUBACK, v: v}
	rl, pl, m := sizeSuback(s, v)
	e.packetID(s.PacketID)
	set := subackCodes3
	if v == V5 {
		set = subackCodes
		s.Properties.check(&e, ctxSuback, m)
	}
	if len(s.ReasonCodes) == 0 {
		e.fail(ProtocolError, "MQTT-3.9.3-2: no reason codes")
	}
	for _, c := range s.ReasonCodes {
		e.reason(set, c)
	}
	out := e.header(dst, byte(SUBACK)<<4, rl)
	if e.e != nil {
		return dst, e.e
	}
	out = appendU16(out, s.PacketID)
	if v == V5 {
		out = s.Properties.appendTo(out, pl)
	}
	for _, c := range s.ReasonCodes {
		out = append(out, byte(c))
	}
	return out, nil
}

func sizeUnsubscribe(u *Unsubscribe, v Version) (rl, pl int, m propMask) {
	rl = 2
	if v == V5 {
		m, pl = u.Properties.measure()
		rl += propsLen(pl)
	}
	for _, f := range u.Filters {
		rl += 2 + len(f)
	}
	return rl, pl, m
}

func appendUnsubscribe(dst []byte, u *Unsubscribe, v Version) ([]byte, *Error) {
	e := encoder{t: UNSUBSCRIBE, v: v}
	rl, pl, m := sizeUnsubscribe(u, v)
	e.packetID(u.PacketID)
	if v == V5 {
		u.Properties.check(&e, ctxUnsubscribe, m)
	}
	if len(u.Filters) == 0 {
		e.fail(ProtocolError, "MQTT-3.10.3-2: no topic filter")
	}
	for _, f := range u.Filters {
		e.str(f)
	}
	out := e.header(dst, byte(UNSUBSCRIBE)<<4|0x02, rl)
	if e.e != nil {
		return dst, e.e
	}
	out = appendU16(out, u.PacketID)
	if v == V5 {
		out = u.Properties.appendTo(out, pl)
	}
	for _, f := range u.Filters {
		out = appendStr(out, f)
	}
	return out, nil
}

func sizeUnsuback(u *Unsuback, v Version) (rl, pl int, m propMask) {
	if v != V5 {
		return 2, 0, 0
	}
	m, pl = u.Properties.measure()
	return 2 + propsLen(pl) + len(u.ReasonCodes), pl, m
}

func appendUnsuback(dst []byte, u *Unsuback, v Version) ([]byte, *Error) {
	e := encoder{t: UNSUBACK, v: v}
	rl, pl, m := sizeUnsuback(u, v)
	e.packetID(u.PacketID)
	if v == V5 {
		u.Properties.check(&e, ctxSuback, m)
		if len(u.ReasonCodes) == 0 {
			e.fail(ProtocolError, "MQTT-3.11.3-2: no reason codes")
		}
		for _, c := range u.ReasonCodes {
			e.reason(unsubackCodes, c)
		}
	}
	out := e.header(dst, byte(UNSUBACK)<<4, rl)
	if e.e != nil {
		return dst, e.e
	}
	out = appendU16(out, u.PacketID)
	if v == V5 {
		out = u.Properties.appendTo(out, pl)
		for _, c := range u.ReasonCodes {
			out = append(out, byte(c))
		}
	}
	return out, nil
}

// sizeShort5 sizes DISCONNECT and AUTH, leaving out what MQTT 5 lets be
// left out, as sizeAck does.
func sizeShort5(rc ReasonCode, p *Properties, v Version) (rl, pl int, m propMask) {
	if v != V5 {
		return 0, 0, 0
	}
	m, pl = p.measure()
	switch {
	case pl > 0:
		return 1 + propsLen(pl), pl, m
	case rc != Success:
		return 1, 0, m
	}
	return 0, 0, m
}

func appendShort5(dst []byte, t Type, rc ReasonCode, p *Properties, v Version) ([]byte, *Error) {
	e := encoder{t: t, v: v}
	rl, pl, m := sizeShort5(rc, p, v)
	if t == AUTH {
		if v != V5 {
			return dst, &Error{Code: ProtocolError, Msg: "AUTH exists only in MQTT 5", Type: t, Version: v}
		}
		e.reason(authCodes, rc)
		p.check(&e, ctxAuth, m)
	} else if v == V5 {
		e.reason(disconnectCodes, rc)
		p.check(&e, ctxDisconnect, m)
	}
	out := e.header(dst, byte(t)<<4, rl)
	if e.e != nil {
		return dst, e.e
	}
	if rl > 0 {
		out = append(out, byte(rc))
	}
	if rl > 1 {
		out = p.appendTo(out, pl)
	}
	return out, nil
}
