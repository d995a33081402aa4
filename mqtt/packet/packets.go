package packet

// Packet is one MQTT control packet. The packet types are used by pointer
// (*Publish, *Connect, ...).
type Packet interface{ Type() Type }

// Connect is the first packet a client sends.
//
// On decode ProtocolName and Version are what the client sent. On encode
// the body is laid out for Append's version; the protocol level written is
// Version if set (else Append's version) and the name ProtocolName if set
// (else the name of that level), so that tests can send a CONNECT the server
// must refuse.
type Connect struct {
	ProtocolName string
	Version      Version
	// CleanStart is Clean Session in 3.x.
	CleanStart bool
	KeepAlive  uint16
	ClientID   string
	Will       *Will // nil: no will
	// UsernameFlag says whether Username is on the wire (an empty user name
	// is a user name); PasswordFlag likewise for Password.
	UsernameFlag bool
	Username     string
	PasswordFlag bool
	Password     []byte
	Properties   Properties
}

// Will is the message a CONNECT asks the server to publish when the
// connection ends without a DISCONNECT.
type Will struct {
	Topic      string
	Payload    []byte
	QoS        byte
	Retain     bool
	Properties Properties // MQTT 5 will properties
}

// Connack answers a CONNECT. In 3.x ReasonCode is the return code (0..5,
// the Conn* constants) and 3.1 has no SessionPresent (dropped on encode).
type Connack struct {
	SessionPresent bool
	ReasonCode     ReasonCode
	Properties     Properties
}

// Publish carries a message. PacketID is on the wire only for QoS 1 and 2;
// a QoS 0 publish drops it on encode and decodes with 0.
type Publish struct {
	Dup        bool
	QoS        byte
	Retain     bool
	Topic      string
	PacketID   uint16
	Properties Properties
	Payload    []byte
}

// Puback acknowledges a QoS 1 PUBLISH. ReasonCode and Properties are MQTT 5
// only (dropped on encode for 3.x).
type Puback struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// Pubrec is the first acknowledgement of a QoS 2 PUBLISH; shaped like Puback.
type Pubrec struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// Pubrel releases a QoS 2 PUBLISH; shaped like Puback.
type Pubrel struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// Pubcomp completes a QoS 2 exchange; shaped like Puback.
type Pubcomp struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// Subscription is one topic filter of a SUBSCRIBE and its options. NoLocal,
// RetainAsPublished and RetainHandling are MQTT 5 only (dropped on encode
// for 3.x).
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
}

// Subscribe asks for subscriptions.
type Subscribe struct {
	PacketID      uint16
	Properties    Properties
	Subscriptions []Subscription
}

// Suback answers a SUBSCRIBE, one code per filter. In 3.x the codes are
// the granted QoS (0, 1, 2) or 0x80 (SubackFailure).
type Suback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Unsubscribe removes subscriptions.
type Unsubscribe struct {
	PacketID   uint16
	Properties Properties
	Filters    []string
}

// Unsuback answers an UNSUBSCRIBE. ReasonCodes (one per filter) and
// Properties are MQTT 5 only: none are on the wire in 3.x.
type Unsuback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Pingreq is a keep-alive probe.
type Pingreq struct{}

// Pingresp answers a Pingreq.
type Pingresp struct{}

// Disconnect ends a connection cleanly. ReasonCode and Properties are MQTT 5
// only.
type Disconnect struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Auth is an MQTT 5 extended authentication exchange; 3.x has no AUTH.
type Auth struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Type implements Packet.
func (*Connect) Type() Type { return CONNECT }

// Type implements Packet.
func (*Connack) Type() Type { return CONNACK }

// Type implements Packet.
func (*Publish) Type() Type { return PUBLISH }

// Type implements Packet.
func (*Puback) Type() Type { return PUBACK }

// Type implements Packet.
func (*Pubrec) Type() Type { return PUBREC }

// Type implements Packet.
func (*Pubrel) Type() Type { return PUBREL }

// Type implements Packet.
func (*Pubcomp) Type() Type { return PUBCOMP }

// Type implements Packet.
func (*Subscribe) Type() Type { return SUBSCRIBE }

// Type implements Packet.
func (*Suback) Type() Type { return SUBACK }

// Type implements Packet.
func (*Unsubscribe) Type() Type { return UNSUBSCRIBE }

// Type implements Packet.
func (*Unsuback) Type() Type { return UNSUBACK }

// Type implements Packet.
func (*Pingreq) Type() Type { return PINGREQ }

// Type implements Packet.
func (*Pingresp) Type() Type { return PINGRESP }

// Type implements Packet.
func (*Disconnect) Type() Type { return DISCONNECT }

// Type implements Packet.
func (*Auth) Type() Type { return AUTH }
