package packet

import "fmt"

// UserProperty is one MQTT 5 user property; a packet may carry several, and
// the same key more than once, in order.
type UserProperty struct{ Key, Value string }

// Properties are the MQTT 5 properties of a packet or of a will (section
// 2.2.2.2). A numeric property is present when its Has* flag is set (its
// value is ignored otherwise); a string or binary property is present when
// it is not empty. Append refuses a property the packet may not carry, and
// Decode refuses one on the wire.
//
// The comment on each field names the packets that may carry it.
type Properties struct {
	// PUBLISH, will. 0: unspecified bytes, 1: UTF-8.
	PayloadFormatIndicator    byte
	HasPayloadFormatIndicator bool
	// PUBLISH, will. Seconds.
	MessageExpiryInterval    uint32
	HasMessageExpiryInterval bool
	// PUBLISH, will.
	ContentType string
	// PUBLISH, will.
	ResponseTopic string
	// PUBLISH, will.
	CorrelationData []byte
	// PUBLISH (one per matching subscription, server to client), SUBSCRIBE
	// (at most one). 1..268435455.
	SubscriptionIdentifier []uint32
	// CONNECT, CONNACK, DISCONNECT. Seconds.
	SessionExpiryInterval    uint32
	HasSessionExpiryInterval bool
	// CONNACK.
	AssignedClientIdentifier string
	// CONNACK. Seconds.
	ServerKeepAlive    uint16
	HasServerKeepAlive bool
	// CONNECT, CONNACK, AUTH.
	AuthenticationMethod string
	// CONNECT (only with AuthenticationMethod), CONNACK, AUTH.
	AuthenticationData []byte
	// CONNECT. 0 or 1 (absent means 1).
	RequestProblemInformation    byte
	HasRequestProblemInformation bool
	// Will. Seconds.
	WillDelayInterval    uint32
	HasWillDelayInterval bool
	// CONNECT. 0 or 1 (absent means 0).
	RequestResponseInformation    byte
	HasRequestResponseInformation bool
	// CONNACK.
	ResponseInformation string
	// CONNACK, DISCONNECT.
	ServerReference string
	// CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK,
	// DISCONNECT, AUTH.
	ReasonString string
	// CONNECT, CONNACK. Not 0 (absent means 65535).
	ReceiveMaximum    uint16
	HasReceiveMaximum bool
	// CONNECT, CONNACK.
	TopicAliasMaximum    uint16
	HasTopicAliasMaximum bool
	// PUBLISH. Not 0.
	TopicAlias    uint16
	HasTopicAlias bool
	// CONNACK. 0 or 1 (absent means 2).
	MaximumQoS    byte
	HasMaximumQoS bool
	// CONNACK. 0 or 1 (absent means 1).
	RetainAvailable    byte
	HasRetainAvailable bool
	// Every packet that has properties, and the will.
	UserProperties []UserProperty
	// CONNECT, CONNACK. Not 0 (absent means no limit).
	MaximumPacketSize    uint32
	HasMaximumPacketSize bool
	// CONNACK. 0 or 1 (absent means 1).
	WildcardSubscriptionAvailable    byte
	HasWildcardSubscriptionAvailable bool
	// CONNACK. 0 or 1 (absent means 1).
	SubscriptionIdentifierAvailable    byte
	HasSubscriptionIdentifierAvailable bool
	// CONNACK. 0 or 1 (absent means 1).
	SharedSubscriptionAvailable    byte
	HasSharedSubscriptionAvailable bool
}

// Property identifiers (section 2.2.2.2).
const (
	propPayloadFormatIndicator          = 0x01
	propMessageExpiryInterval           = 0x02
	propContentType                     = 0x03
	propResponseTopic                   = 0x08
	propCorrelationData                 = 0x09
	propSubscriptionIdentifier          = 0x0B
	propSessionExpiryInterval           = 0x11
	propAssignedClientIdentifier        = 0x12
	propServerKeepAlive                 = 0x13
	propAuthenticationMethod            = 0x15
	propAuthenticationData              = 0x16
	propRequestProblemInformation       = 0x17
	propWillDelayInterval               = 0x18
	propRequestResponseInformation      = 0x19
	propResponseInformation             = 0x1A
	propServerReference                 = 0x1C
	propReasonString                    = 0x1F
	propReceiveMaximum                  = 0x21
	propTopicAliasMaximum               = 0x22
	propTopicAlias                      = 0x23
	propMaximumQoS                      = 0x24
	propRetainAvailable                 = 0x25
	propUserProperty                    = 0x26
	propMaximumPacketSize               = 0x27
	propWildcardSubscriptionAvailable   = 0x28
	propSubscriptionIdentifierAvailable = 0x29
	propSharedSubscriptionAvailable     = 0x2A
)

var propNames = map[uint32]string{
	propPayloadFormatIndicator: "payload format indicator", propMessageExpiryInterval: "message expiry interval",
	propContentType: "content type", propResponseTopic: "response topic", propCorrelationData: "correlation data",
	propSubscriptionIdentifier: "subscription identifier", propSessionExpiryInterval: "session expiry interval",
	propAssignedClientIdentifier: "assigned client identifier", propServerKeepAlive: "server keep alive",
	propAuthenticationMethod: "authentication method", propAuthenticationData: "authentication data",
	propRequestProblemInformation: "request problem information", propWillDelayInterval: "will delay interval",
	propRequestResponseInformation: "request response information", propResponseInformation: "response information",
	propServerReference: "server reference", propReasonString: "reason string", propReceiveMaximum: "receive maximum",
	propTopicAliasMaximum: "topic alias maximum", propTopicAlias: "topic alias", propMaximumQoS: "maximum QoS",
	propRetainAvailable: "retain available", propUserProperty: "user property",
	propMaximumPacketSize:               "maximum packet size",
	propWildcardSubscriptionAvailable:   "wildcard subscription available",
	propSubscriptionIdentifierAvailable: "subscription identifier available",
	propSharedSubscriptionAvailable:     "shared subscription available",
}

func propName(id uint32) string {
	if s, ok := propNames[id]; ok {
		return s
	}
	return fmt.Sprintf("property 0x%02x", id)
}

// propMask has bit id set for property id; every identifier is below 64.
type propMask uint64

func bit(id uint32) propMask { return 1 << id }

// propCtx is where a property list appears: a packet type, or the will.
type propCtx uint8

const (
	ctxConnect propCtx = iota
	ctxWill
	ctxConnack
	ctxPublish
	ctxPuback // PUBACK, PUBREC, PUBREL, PUBCOMP
	ctxSubscribe
	ctxSuback // SUBACK, UNSUBACK
	ctxUnsubscribe
	ctxDisconnect
	ctxAuth
)

var ctxNames = [...]string{
	ctxConnect: "CONNECT", ctxWill: "will properties", ctxConnack: "CONNACK", ctxPublish: "PUBLISH",
	ctxPuback: "an acknowledgement", ctxSubscribe: "SUBSCRIBE", ctxSuback: "SUBACK or UNSUBACK",
	ctxUnsubscribe: "UNSUBSCRIBE", ctxDisconnect: "DISCONNECT", ctxAuth: "AUTH",
}

// allowed is the table of section 2.2.2.2: which properties each packet
// may carry.
var allowed = [...]propMask{
	ctxConnect: bit(propSessionExpiryInterval) | bit(propAuthenticationMethod) | bit(propAuthenticationData) |
		bit(propRequestProblemInformation) | bit(propRequestResponseInformation) | bit(propReceiveMaximum) |
		bit(propTopicAliasMaximum) | bit(propUserProperty) | bit(propMaximumPacketSize),
	ctxWill: bit(propPayloadFormatIndicator) | bit(propMessageExpiryInterval) | bit(propContentType) |
		bit(propResponseTopic) | bit(propCorrelationData) | bit(propWillDelayInterval) | bit(propUserProperty),
	ctxConnack: bit(propSessionExpiryInterval) | bit(propAssignedClientIdentifier) | bit(propServerKeepAlive) |
		bit(propAuthenticationMethod) | bit(propAuthenticationData) | bit(propResponseInformation) |
		bit(propServerReference) | bit(propReasonString) | bit(propReceiveMaximum) | bit(propTopicAliasMaximum) |
		bit(propMaximumQoS) | bit(propRetainAvailable) | bit(propUserProperty) | bit(propMaximumPacketSize) |
		bit(propWildcardSubscriptionAvailable) | bit(propSubscriptionIdentifierAvailable) |
		bit(propSharedSubscriptionAvailable),
	ctxPublish: bit(propPayloadFormatIndicator) | bit(propMessageExpiryInterval) | bit(propContentType) |
		bit(propResponseTopic) | bit(propCorrelationData) | bit(propSubscriptionIdentifier) | bit(propTopicAlias) |
		bit(propUserProperty),
	ctxPuback:      bit(propReasonString) | bit(propUserProperty),
	ctxSubscribe:   bit(propSubscriptionIdentifier) | bit(propUserProperty),
	ctxSuback:      bit(propReasonString) | bit(propUserProperty),
	ctxUnsubscribe: bit(propUserProperty),
	ctxDisconnect:  bit(propSessionExpiryInterval) | bit(propServerReference) | bit(propReasonString) | bit(propUserProperty),
	ctxAuth:        bit(propAuthenticationMethod) | bit(propAuthenticationData) | bit(propReasonString) | bit(propUserProperty),
}

// props decodes a property length and the properties after it into p.
func (d *decoder) props(p *Properties, ctx propCtx) {
	n := d.vbi("property length")
	if d.e != nil {
		return
	}
	if uint64(n) > uint64(len(d.b)) {
		d.fail(MalformedPacket, "property length %d runs past the end of the packet (%d bytes left)", n, len(d.b))
		return
	}
	rest := d.b[n:]
	d.b = d.b[:n]
	var seen propMask
	for len(d.b) > 0 && d.e == nil {
		id := d.vbi("property identifier")
		if d.e != nil {
			return
		}
		if id >= 64 || allowed[ctx]&bit(id) == 0 {
			d.fail(MalformedPacket, "2.2.2.2: %s is not allowed in %s", propName(id), ctxNames[ctx])
			return
		}
		if seen&bit(id) != 0 && id != propUserProperty && (id != propSubscriptionIdentifier || ctx != ctxPublish) {
			d.fail(ProtocolError, "2.2.2.2: %s included more than once", propName(id))
			return
		}
		seen |= bit(id)
		d.prop(p, id)
	}
	if d.e != nil {
		return
	}
	if ctx == ctxConnect && p.AuthenticationMethod == "" && seen&bit(propAuthenticationData) != 0 {
		d.fail(ProtocolError, "3.1.2.11.10: authentication data without an authentication method")
		return
	}
	d.b = rest
}

// flag reads a property whose only values are 0 and 1.
func (d *decoder) flag(id uint32) byte {
	c := d.u8("property value")
	if c > 1 && d.e == nil {
		d.fail(ProtocolError, "2.2.2.2: %s is %d, not 0 or 1", propName(id), c)
	}
	return c
}

func (d *decoder) prop(p *Properties, id uint32) {
	const what = "property value"
	switch id {
	case propPayloadFormatIndicator:
		p.PayloadFormatIndicator, p.HasPayloadFormatIndicator = d.flag(id), true
	case propMessageExpiryInterval:
		p.MessageExpiryInterval, p.HasMessageExpiryInterval = d.u32(what), true
	case propContentType:
		p.ContentType = d.str(what)
	case propResponseTopic:
		p.ResponseTopic = d.str(what)
	case propCorrelationData:
		p.CorrelationData = d.binary(what)
	case propSubscriptionIdentifier:
		v := d.vbi(what)
		if v == 0 && d.e == nil {
			d.fail(ProtocolError, "3.3.2.3.8: subscription identifier 0")
		}
		p.SubscriptionIdentifier = append(p.SubscriptionIdentifier, v)
	case propSessionExpiryInterval:
		p.SessionExpiryInterval, p.HasSessionExpiryInterval = d.u32(what), true
	case propAssignedClientIdentifier:
		p.AssignedClientIdentifier = d.str(what)
	case propServerKeepAlive:
		p.ServerKeepAlive, p.HasServerKeepAlive = d.u16(what), true
	case propAuthenticationMethod:
		p.AuthenticationMethod = d.str(what)
	case propAuthenticationData:
		p.AuthenticationData = d.binary(what)
	case propRequestProblemInformation:
		p.RequestProblemInformation, p.HasRequestProblemInformation = d.flag(id), true
	case propWillDelayInterval:
		p.WillDelayInterval, p.HasWillDelayInterval = d.u32(what), true
	case propRequestResponseInformation:
		p.RequestResponseInformation, p.HasRequestResponseInformation = d.flag(id), true
	case propResponseInformation:
		p.ResponseInformation = d.str(what)
	case propServerReference:
		p.ServerReference = d.str(what)
	case propReasonString:
		p.ReasonString = d.str(what)
	case propReceiveMaximum:
		p.ReceiveMaximum, p.HasReceiveMaximum = d.u16(what), true
		if p.ReceiveMaximum == 0 && d.e == nil {
			d.fail(ProtocolError, "3.1.2.11.3: receive maximum 0")
		}
	case propTopicAliasMaximum:
		p.TopicAliasMaximum, p.HasTopicAliasMaximum = d.u16(what), true
	case propTopicAlias:
		p.TopicAlias, p.HasTopicAlias = d.u16(what), true
		if p.TopicAlias == 0 && d.e == nil {
			d.fail(TopicAliasInvalid, "MQTT-3.3.2-8: topic alias 0")
		}
	case propMaximumQoS:
		p.MaximumQoS, p.HasMaximumQoS = d.flag(id), true
	case propRetainAvailable:
		p.RetainAvailable, p.HasRetainAvailable = d.flag(id), true
	case propUserProperty:
		k := d.str(what)
		v := d.str(what)
		p.UserProperties = append(p.UserProperties, UserProperty{k, v})
	case propMaximumPacketSize:
		p.MaximumPacketSize, p.HasMaximumPacketSize = d.u32(what), true
		if p.MaximumPacketSize == 0 && d.e == nil {
			d.fail(ProtocolError, "3.1.2.11.4: maximum packet size 0")
		}
	case propWildcardSubscriptionAvailable:
		p.WildcardSubscriptionAvailable, p.HasWildcardSubscriptionAvailable = d.flag(id), true
	case propSubscriptionIdentifierAvailable:
		p.SubscriptionIdentifierAvailable, p.HasSubscriptionIdentifierAvailable = d.flag(id), true
	case propSharedSubscriptionAvailable:
		p.SharedSubscriptionAvailable, p.HasSharedSubscriptionAvailable = d.flag(id), true
	}
}

// measure returns the properties present and their encoded length, without
// the property length itself.
func (p *Properties) measure() (m propMask, n int) {
	if p.HasPayloadFormatIndicator {
		m, n = m|bit(propPayloadFormatIndicator), n+2
	}
	if p.HasMessageExpiryInterval {
		m, n = m|bit(propMessageExpiryInterval), n+5
	}
	if p.ContentType != "" {
		m, n = m|bit(propContentType), n+3+len(p.ContentType)
	}
	if p.ResponseTopic != "" {
		m, n = m|bit(propResponseTopic), n+3+len(p.ResponseTopic)
	}
	if len(p.CorrelationData) > 0 {
		m, n = m|bit(propCorrelationData), n+3+len(p.CorrelationData)
	}
	if len(p.SubscriptionIdentifier) > 0 {
		m |= bit(propSubscriptionIdentifier)
		for _, id := range p.SubscriptionIdentifier {
			n += 1 + vbiLen(id)
		}
	}
	if p.HasSessionExpiryInterval {
		m, n = m|bit(propSessionExpiryInterval), n+5
	}
	if p.AssignedClientIdentifier != "" {
		m, n = m|bit(propAssignedClientIdentifier), n+3+len(p.AssignedClientIdentifier)
	}
	if p.HasServerKeepAlive {
		m, n = m|bit(propServerKeepAlive), n+3
	}
	if p.AuthenticationMethod != "" {
		m, n = m|bit(propAuthenticationMethod), n+3+len(p.AuthenticationMethod)
	}
	if len(p.AuthenticationData) > 0 {
		m, n = m|bit(propAuthenticationData), n+3+len(p.AuthenticationData)
	}
	if p.HasRequestProblemInformation {
		m, n = m|bit(propRequestProblemInformation), n+2
	}
	if p.HasWillDelayInterval {
		m, n = m|bit(propWillDelayInterval), n+5
	}
	if p.HasRequestResponseInformation {
		m, n = m|bit(propRequestResponseInformation), n+2
	}
	if p.ResponseInformation != "" {
		m, n = m|bit(propResponseInformation), n+3+len(p.ResponseInformation)
	}
	if p.ServerReference != "" {
		m, n = m|bit(propServerReference), n+3+len(p.ServerReference)
	}
	if p.ReasonString != "" {
		m, n = m|bit(propReasonString), n+3+len(p.ReasonString)
	}
	if p.HasReceiveMaximum {
		m, n = m|bit(propReceiveMaximum), n+3
	}
	if p.HasTopicAliasMaximum {
		m, n = m|bit(propTopicAliasMaximum), n+3
	}
	if p.HasTopicAlias {
		m, n = m|bit(propTopicAlias), n+3
	}
	if p.HasMaximumQoS {
		m, n = m|bit(propMaximumQoS), n+2
	}
	if p.HasRetainAvailable {
		m, n = m|bit(propRetainAvailable), n+2
	}
	if len(p.UserProperties) > 0 {
		m |= bit(propUserProperty)
		for _, u := range p.UserProperties {
			n += 5 + len(u.Key) + len(u.Value)
		}
	}
	if p.HasMaximumPacketSize {
		m, n = m|bit(propMaximumPacketSize), n+5
	}
	if p.HasWildcardSubscriptionAvailable {
		m, n = m|bit(propWildcardSubscriptionAvailable), n+2
	}
	if p.HasSubscriptionIdentifierAvailable {
		m, n = m|bit(propSubscriptionIdentifierAvailable), n+2
	}
	if p.HasSharedSubscriptionAvailable {
		m, n = m|bit(propSharedSubscriptionAvailable), n+2
	}
	return m, n
}

// check refuses, before encoding, the properties Decode would refuse:
// those the packet may not carry and values out of range. m is from
// measure.
func (p *Properties) check(e *encoder, ctx propCtx, m propMask) bool {
	if bad := m &^ allowed[ctx]; bad != 0 {
		for id := uint32(0); id < 64; id++ {
			if bad&bit(id) != 0 {
				return e.fail(MalformedPacket, "2.2.2.2: "+propName(id)+" is not allowed in "+ctxNames[ctx])
			}
		}
	}
	flags := [...]struct {
		has bool
		v   byte
		id  uint32
	}{
		{p.HasPayloadFormatIndicator, p.PayloadFormatIndicator, propPayloadFormatIndicator},
		{p.HasRequestProblemInformation, p.RequestProblemInformation, propRequestProblemInformation},
		{p.HasRequestResponseInformation, p.RequestResponseInformation, propRequestResponseInformation},
		{p.HasMaximumQoS, p.MaximumQoS, propMaximumQoS},
		{p.HasRetainAvailable, p.RetainAvailable, propRetainAvailable},
		{p.HasWildcardSubscriptionAvailable, p.WildcardSubscriptionAvailable, propWildcardSubscriptionAvailable},
		{p.HasSubscriptionIdentifierAvailable, p.SubscriptionIdentifierAvailable, propSubscriptionIdentifierAvailable},
		{p.HasSharedSubscriptionAvailable, p.SharedSubscriptionAvailable, propSharedSubscriptionAvailable},
	}
	for _, f := range flags {
		if f.has && f.v > 1 {
			return e.fail(ProtocolError, "2.2.2.2: "+propName(f.id)+" must be 0 or 1")
		}
	}
	switch {
	case p.HasReceiveMaximum && p.ReceiveMaximum == 0:
		return e.fail(ProtocolError, "3.1.2.11.3: receive maximum 0")
	case p.HasMaximumPacketSize && p.MaximumPacketSize == 0:
		return e.fail(ProtocolError, "3.1.2.11.4: maximum packet size 0")
	case p.HasTopicAlias && p.TopicAlias == 0:
		return e.fail(TopicAliasInvalid, "MQTT-3.3.2-8: topic alias 0")
	case len(p.SubscriptionIdentifier) > 1 && ctx != ctxPublish:
		return e.fail(ProtocolError, "3.8.2.1.2: more than one subscription identifier")
	case ctx == ctxConnect && p.AuthenticationMethod == "" && len(p.AuthenticationData) > 0:
		return e.fail(ProtocolError, "3.1.2.11.10: authentication data without an authentication method")
	}
	for _, id := range p.SubscriptionIdentifier {
		if id == 0 || id > maxVBI {
			return e.fail(ProtocolError, "3.3.2.3.8: subscription identifier out of 1..268435455")
		}
	}
	ok := e.str(p.ContentType) && e.str(p.ResponseTopic) && e.bin(p.CorrelationData) &&
		e.str(p.AssignedClientIdentifier) && e.str(p.AuthenticationMethod) && e.bin(p.AuthenticationData) &&
		e.str(p.ResponseInformation) && e.str(p.ServerReference) && e.str(p.ReasonString)
	for _, u := range p.UserProperties {
		ok = ok && e.str(u.Key) && e.str(u.Value)
	}
	return ok
}

// appendProps appends the property length n and the properties, in
// identifier order.
func (p *Properties) appendTo(dst []byte, n int) []byte {
	dst = appendVBI(dst, uint32(n))
	if n == 0 {
		return dst
	}
	if p.HasPayloadFormatIndicator {
		dst = append(dst, propPayloadFormatIndicator, p.PayloadFormatIndicator)
	}
	if p.HasMessageExpiryInterval {
		dst = appendU32(append(dst, propMessageExpiryInterval), p.MessageExpiryInterval)
	}
	if p.ContentType != "" {
		dst = appendStr(append(dst, propContentType), p.ContentType)
	}
	if p.ResponseTopic != "" {
		dst = appendStr(append(dst, propResponseTopic), p.ResponseTopic)
	}
	if len(p.CorrelationData) > 0 {
		dst = appendBin(append(dst, propCorrelationData), p.CorrelationData)
	}
	for _, id := range p.SubscriptionIdentifier {
		dst = appendVBI(append(dst, propSubscriptionIdentifier), id)
	}
	if p.HasSessionExpiryInterval {
		dst = appendU32(append(dst, propSessionExpiryInterval), p.SessionExpiryInterval)
	}
	if p.AssignedClientIdentifier != "" {
		dst = appendStr(append(dst, propAssignedClientIdentifier), p.AssignedClientIdentifier)
	}
	if p.HasServerKeepAlive {
		dst = appendU16(append(dst, propServerKeepAlive), p.ServerKeepAlive)
	}
	if p.AuthenticationMethod != "" {
		dst = appendStr(append(dst, propAuthenticationMethod), p.AuthenticationMethod)
	}
	if len(p.AuthenticationData) > 0 {
		dst = appendBin(append(dst, propAuthenticationData), p.AuthenticationData)
	}
	if p.HasRequestProblemInformation {
		dst = append(dst, propRequestProblemInformation, p.RequestProblemInformation)
	}
	if p.HasWillDelayInterval {
		dst = appendU32(append(dst, propWillDelayInterval), p.WillDelayInterval)
	}
	if p.HasRequestResponseInformation {
		dst = append(dst, propRequestResponseInformation, p.RequestResponseInformation)
	}
	if p.ResponseInformation != "" {
		dst = appendStr(append(dst, propResponseInformation), p.ResponseInformation)
	}
	if p.ServerReference != "" {
		dst = appendStr(append(dst, propServerReference), p.ServerReference)
	}
	if p.ReasonString != "" {
		dst = appendStr(append(dst, propReasonString), p.ReasonString)
	}
	if p.HasReceiveMaximum {
		dst = appendU16(append(dst, propReceiveMaximum), p.ReceiveMaximum)
	}
	if p.HasTopicAliasMaximum {
		dst = appendU16(append(dst, propTopicAliasMaximum), p.TopicAliasMaximum)
	}
	if p.HasTopicAlias {
		dst = appendU16(append(dst, propTopicAlias), p.TopicAlias)
	}
	if p.HasMaximumQoS {
		dst = append(dst, propMaximumQoS, p.MaximumQoS)
	}
	if p.HasRetainAvailable {
		dst = append(dst, propRetainAvailable, p.RetainAvailable)
	}
	for _, u := range p.UserProperties {
		dst = appendStr(appendStr(append(dst, propUserProperty), u.Key), u.Value)
	}
	if p.HasMaximumPacketSize {
		dst = appendU32(append(dst, propMaximumPacketSize), p.MaximumPacketSize)
	}
	if p.HasWildcardSubscriptionAvailable {
		dst = append(dst, propWildcardSubscriptionAvailable, p.WildcardSubscriptionAvailable)
	}
	if p.HasSubscriptionIdentifierAvailable {
		dst = append(dst, propSubscriptionIdentifierAvailable, p.SubscriptionIdentifierAvailable)
	}
	if p.HasSharedSubscriptionAvailable {
		dst = append(dst, propSharedSubscriptionAvailable, p.SharedSubscriptionAvailable)
	}
	return dst
}
