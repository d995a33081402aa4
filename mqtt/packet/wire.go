package packet

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxVBI is the largest Variable Byte Integer: four bytes of seven bits.
const maxVBI = 268435455

// MaxPacketSize (268435460) is the largest packet the protocol can frame:
// a one-byte type, a four-byte remaining length and the largest remaining
// length.
const MaxPacketSize = maxVBI + 5

// decoder reads the fields of one packet body. Errors are sticky: after the
// first, every read returns a zero value and the body is dropped, so a
// decoding function can read on and check d.e once, and the first error is
// the one reported.
type decoder struct {
	b []byte
	t Type
	v Version
	e *Error
}

func (d *decoder) fail(code ReasonCode, format string, args ...any) {
	if d.e == nil {
		d.e = &Error{Code: code, Msg: fmt.Sprintf(format, args...), Type: d.t, Version: d.v}
	}
	d.b = nil
}

func (d *decoder) short(what string, need int) bool {
	if d.e != nil {
		return true
	}
	if len(d.b) < need {
		d.fail(MalformedPacket, "%s runs past the end of the packet", what)
		return true
	}
	return false
}

func (d *decoder) u8(what string) byte {
	if d.short(what, 1) {
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) u16(what string) uint16 {
	if d.short(what, 2) {
		return 0
	}
	v := binary.BigEndian.Uint16(d.b)
	d.b = d.b[2:]
	return v
}

func (d *decoder) u32(what string) uint32 {
	if d.short(what, 4) {
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

// vbi reads a Variable Byte Integer. Non-minimal encodings are accepted, as
// 3.1.1 allows and 5.0 only asks of senders; a fifth byte is not.
func (d *decoder) vbi(what string) uint32 {
	var v uint32
	for i := 0; i < 4; i++ {
		c := d.u8(what)
		if d.e != nil {
			return 0
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v
		}
	}
	d.fail(MalformedPacket, "1.5.5: %s is a variable byte integer longer than 4 bytes", what)
	return 0
}

// raw reads a two-byte length and that many bytes, aliasing the packet
// with its capacity capped so an append by the caller cannot overwrite the
// next field.
func (d *decoder) raw(what string) []byte {
	n := int(d.u16(what))
	if d.short(what, n) {
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

// binary reads Binary Data; empty is nil.
func (d *decoder) binary(what string) []byte {
	b := d.raw(what)
	if len(b) == 0 {
		return nil
	}
	return b
}

// str reads a UTF-8 Encoded String (copied, so the buffer can be reused).
func (d *decoder) str(what string) string {
	b := d.raw(what)
	if d.e != nil || len(b) == 0 {
		return ""
	}
	if !utf8.Valid(b) {
		d.fail(MalformedPacket, "MQTT-1.5.4-1 (3.1.1: MQTT-1.5.3-1): %s is not well-formed UTF-8", what)
		return ""
	}
	if bytes.IndexByte(b, 0) >= 0 {
		d.fail(MalformedPacket, "MQTT-1.5.4-2 (3.1.1: MQTT-1.5.3-2): %s contains U+0000", what)
		return ""
	}
	return string(b)
}

// rest takes the remaining bytes (a payload); empty is nil.
func (d *decoder) rest() []byte {
	if d.e != nil || len(d.b) == 0 {
		return nil
	}
	b := d.b[:len(d.b):len(d.b)]
	d.b = nil
	return b
}

// packetID reads a packet identifier, which must not be 0 (3.1.1
// MQTT-2.3.1-1; 5.0 MQTT-2.2.1-3, and MQTT-2.2.1-5 for the
// acknowledgements, which repeat a non-zero identifier).
func (d *decoder) packetID() uint16 {
	id := d.u16("packet identifier")
	if id == 0 && d.e == nil {
		d.fail(ProtocolError, "MQTT-2.2.1-3 (3.1.1: MQTT-2.3.1-1): packet identifier 0")
	}
	return id
}

// encoder collects the first reason a packet cannot be encoded. Messages
// are constant strings so that no field of the packet escapes through them
// (which would cost PUBLISH its allocation-free encoding).
type encoder struct {
	t Type
	v Version
	e *Error
}

func (e *encoder) fail(code ReasonCode, msg string) bool {
	if e.e == nil {
		e.e = &Error{Code: code, Msg: msg, Type: e.t, Version: e.v}
	}
	return false
}

func (e *encoder) str(s string) bool {
	switch {
	case len(s) > 65535:
		return e.fail(MalformedPacket, "1.5.4: string longer than 65535 bytes")
	case !utf8.ValidString(s):
		return e.fail(MalformedPacket, "MQTT-1.5.4-1: string is not well-formed UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return e.fail(MalformedPacket, "MQTT-1.5.4-2: string contains U+0000")
	}
	return true
}

func (e *encoder) bin(b []byte) bool {
	if len(b) > 65535 {
		return e.fail(MalformedPacket, "1.5.6: binary data longer than 65535 bytes")
	}
	return true
}

func (e *encoder) packetID(id uint16) bool {
	if id == 0 {
		return e.fail(ProtocolError, "MQTT-2.2.1-3: packet identifier 0")
	}
	return true
}

func vbiLen(v uint32) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	}
	return 4
}

func appendVBI(dst []byte, v uint32) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

func appendU16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendU32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendStr(dst []byte, s string) []byte {
	return append(appendU16(dst, uint16(len(s))), s...)
}

func appendBin(dst []byte, b []byte) []byte {
	return append(appendU16(dst, uint16(len(b))), b...)
}

// propsLen is the length of a property list with its length prefix.
func propsLen(n int) int { return vbiLen(uint32(n)) + n }

// reasonSet is the reason codes a packet may carry.
type reasonSet [4]uint64

func newReasonSet(codes ...ReasonCode) *reasonSet {
	var s reasonSet
	for _, c := range codes {
		s[c>>6] |= 1 << (c & 63)
	}
	return &s
}

func (s *reasonSet) has(c ReasonCode) bool { return s[c>>6]&(1<<(c&63)) != 0 }

// The reason codes of each MQTT 5 packet (sections 3.2.2.2 to 3.15.2.1).
var (
	connackCodes = newReasonSet(Success, UnspecifiedError, MalformedPacket, ProtocolError,
		ImplementationSpecificError, UnsupportedProtocolVersion, ClientIdentifierNotValid,
		BadUserNameOrPassword, NotAuthorized, ServerUnavailable, ServerBusy, Banned,
		BadAuthenticationMethod, TopicNameInvalid, PacketTooLarge, QuotaExceeded,
		PayloadFormatInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer, ServerMoved,
		ConnectionRateExceeded)
	pubackCodes = newReasonSet(Success, NoMatchingSubscribers, UnspecifiedError,
		ImplementationSpecificError, NotAuthorized, TopicNameInvalid, PacketIdentifierInUse,
		QuotaExceeded, PayloadFormatInvalid) // PUBACK and PUBREC
	pubrelCodes = newReasonSet(Success, PacketIdentifierNotFound) // PUBREL and PUBCOMP
	subackCodes = newReasonSet(GrantedQoS0, GrantedQoS1, GrantedQoS2, UnspecifiedError,
		ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse,
		QuotaExceeded, SharedSubscriptionsNotSupported, SubscriptionIdentifiersNotSupported,
		WildcardSubscriptionsNotSupported)
	subackCodes3  = newReasonSet(GrantedQoS0, GrantedQoS1, GrantedQoS2, SubackFailure)
	unsubackCodes = newReasonSet(Success, NoSubscriptionExisted, UnspecifiedError,
		ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse)
	disconnectCodes = newReasonSet(NormalDisconnection, DisconnectWithWill, UnspecifiedError,
		MalformedPacket, ProtocolError, ImplementationSpecificError, NotAuthorized, ServerBusy,
		ServerShuttingDown, KeepAliveTimeout, SessionTakenOver, TopicFilterInvalid, TopicNameInvalid,
		ReceiveMaximumExceeded, TopicAliasInvalid, PacketTooLarge, MessageRateTooHigh, QuotaExceeded,
		AdministrativeAction, PayloadFormatInvalid, RetainNotSupported, QoSNotSupported,
		UseAnotherServer, ServerMoved, SharedSubscriptionsNotSupported, ConnectionRateExceeded,
		MaximumConnectTime, SubscriptionIdentifiersNotSupported, WildcardSubscriptionsNotSupported)
	authCodes = newReasonSet(Success, ContinueAuthentication, ReAuthenticate)
)

// ackRule is the conformance statement requiring each packet's reason
// codes to come from its table.
var ackRule = map[Type]string{
	CONNACK: "MQTT-3.2.2-8", PUBACK: "MQTT-3.4.2-1", PUBREC: "MQTT-3.5.2-1", PUBREL: "MQTT-3.6.2-1",
	PUBCOMP: "MQTT-3.7.2-1", SUBACK: "MQTT-3.9.3-2", UNSUBACK: "MQTT-3.11.3-2",
	DISCONNECT: "MQTT-3.14.2-1", AUTH: "MQTT-3.15.2-1",
}

func (d *decoder) reason(set *reasonSet) ReasonCode {
	c := ReasonCode(d.u8("reason code"))
	if d.e == nil && !set.has(c) {
		d.fail(MalformedPacket, "%s: 0x%02x is not a %s reason code", ackRule[d.t], byte(c), d.t)
	}
	return c
}

func (e *encoder) reason(set *reasonSet, c ReasonCode) bool {
	if !set.has(c) {
		return e.fail(MalformedPacket, "reason code not allowed in this packet")
	}
	return true
}
