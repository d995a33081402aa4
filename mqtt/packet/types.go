package packet

import "strconv"

// Version is an MQTT protocol level, as the CONNECT packet carries it.
type Version byte

// The protocol levels this package speaks.
const (
	V31  Version = 3 // MQTT 3.1, protocol name "MQIsdp"
	V311 Version = 4 // MQTT 3.1.1, protocol name "MQTT"
	V5   Version = 5 // MQTT 5.0, protocol name "MQTT"
)

// Valid reports whether v is a protocol level this package speaks.
func (v Version) Valid() bool { return v == V31 || v == V311 || v == V5 }

// ProtocolName is the protocol name a CONNECT of level v carries.
func (v Version) ProtocolName() string {
	if v == V31 {
		return "MQIsdp"
	}
	return "MQTT"
}

func (v Version) String() string {
	switch v {
	case V31:
		return "3.1"
	case V311:
		return "3.1.1"
	case V5:
		return "5.0"
	}
	return "Version(" + strconv.Itoa(int(v)) + ")"
}

// Type is a control packet type, the high nibble of the first byte.
type Type byte

// The control packet types. 0 is reserved; AUTH exists only in MQTT 5.
const (
	CONNECT Type = iota + 1
	CONNACK
	PUBLISH
	PUBACK
	PUBREC
	PUBREL
	PUBCOMP
	SUBSCRIBE
	SUBACK
	UNSUBSCRIBE
	UNSUBACK
	PINGREQ
	PINGRESP
	DISCONNECT
	AUTH
)

var typeNames = [...]string{
	CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK",
	PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE",
	SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK",
	PINGREQ: "PINGREQ", PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT", AUTH: "AUTH",
}

func (t Type) String() string {
	if t >= CONNECT && t <= AUTH {
		return typeNames[t]
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// ReasonCode is an MQTT 5 reason code, or a 3.x CONNACK return code or
// SUBACK return code (which share the byte on the wire).
type ReasonCode byte

// MQTT 5 reason codes (section 2.4). Several codes share 0x00.
const (
	Success                             ReasonCode = 0x00
	NormalDisconnection                 ReasonCode = 0x00
	GrantedQoS0                         ReasonCode = 0x00
	GrantedQoS1                         ReasonCode = 0x01
	GrantedQoS2                         ReasonCode = 0x02
	DisconnectWithWill                  ReasonCode = 0x04
	NoMatchingSubscribers               ReasonCode = 0x10
	NoSubscriptionExisted               ReasonCode = 0x11
	ContinueAuthentication              ReasonCode = 0x18
	ReAuthenticate                      ReasonCode = 0x19
	UnspecifiedError                    ReasonCode = 0x80
	MalformedPacket                     ReasonCode = 0x81
	ProtocolError                       ReasonCode = 0x82
	ImplementationSpecificError         ReasonCode = 0x83
	UnsupportedProtocolVersion          ReasonCode = 0x84
	ClientIdentifierNotValid            ReasonCode = 0x85
	BadUserNameOrPassword               ReasonCode = 0x86
	NotAuthorized                       ReasonCode = 0x87
	ServerUnavailable                   ReasonCode = 0x88
	ServerBusy                          ReasonCode = 0x89
	Banned                              ReasonCode = 0x8A
	ServerShuttingDown                  ReasonCode = 0x8B
	BadAuthenticationMethod             ReasonCode = 0x8C
	KeepAliveTimeout                    ReasonCode = 0x8D
	SessionTakenOver                    ReasonCode = 0x8E
	TopicFilterInvalid                  ReasonCode = 0x8F
	TopicNameInvalid                    ReasonCode = 0x90
	PacketIdentifierInUse               ReasonCode = 0x91
	PacketIdentifierNotFound            ReasonCode = 0x92
	ReceiveMaximumExceeded              ReasonCode = 0x93
	TopicAliasInvalid                   ReasonCode = 0x94
	PacketTooLarge                      ReasonCode = 0x95
	MessageRateTooHigh                  ReasonCode = 0x96
	QuotaExceeded                       ReasonCode = 0x97
	AdministrativeAction                ReasonCode = 0x98
	PayloadFormatInvalid                ReasonCode = 0x99
	RetainNotSupported                  ReasonCode = 0x9A
	QoSNotSupported                     ReasonCode = 0x9B
	UseAnotherServer                    ReasonCode = 0x9C
	ServerMoved                         ReasonCode = 0x9D
	SharedSubscriptionsNotSupported     ReasonCode = 0x9E
	ConnectionRateExceeded              ReasonCode = 0x9F
	MaximumConnectTime                  ReasonCode = 0xA0
	SubscriptionIdentifiersNotSupported ReasonCode = 0xA1
	WildcardSubscriptionsNotSupported   ReasonCode = 0xA2
)

// MQTT 3.1 and 3.1.1 CONNACK return codes (3.1.1 section 3.2.2.3).
const (
	ConnAccepted                   ReasonCode = 0
	ConnRefusedProtocolVersion     ReasonCode = 1
	ConnRefusedIdentifierRejected  ReasonCode = 2
	ConnRefusedServerUnavailable   ReasonCode = 3
	ConnRefusedBadUsernamePassword ReasonCode = 4
	ConnRefusedNotAuthorized       ReasonCode = 5
)

// SubackFailure is the MQTT 3.1.1 SUBACK return code for a refused
// subscription; the same byte as UnspecifiedError.
const SubackFailure ReasonCode = 0x80

var reasonNames = map[ReasonCode]string{
	Success: "success", GrantedQoS1: "granted QoS 1", GrantedQoS2: "granted QoS 2",
	DisconnectWithWill: "disconnect with will message", NoMatchingSubscribers: "no matching subscribers",
	NoSubscriptionExisted: "no subscription existed", ContinueAuthentication: "continue authentication",
	ReAuthenticate: "re-authenticate", UnspecifiedError: "unspecified error",
	MalformedPacket: "malformed packet", ProtocolError: "protocol error",
	ImplementationSpecificError: "implementation specific error",
	UnsupportedProtocolVersion:  "unsupported protocol version",
	ClientIdentifierNotValid:    "client identifier not valid", BadUserNameOrPassword: "bad user name or password",
	NotAuthorized: "not authorized", ServerUnavailable: "server unavailable", ServerBusy: "server busy",
	Banned: "banned", ServerShuttingDown: "server shutting down", BadAuthenticationMethod: "bad authentication method",
	KeepAliveTimeout: "keep alive timeout", SessionTakenOver: "session taken over",
	TopicFilterInvalid: "topic filter invalid", TopicNameInvalid: "topic name invalid",
	PacketIdentifierInUse: "packet identifier in use", PacketIdentifierNotFound: "packet identifier not found",
	ReceiveMaximumExceeded: "receive maximum exceeded", TopicAliasInvalid: "topic alias invalid",
	PacketTooLarge: "packet too large", MessageRateTooHigh: "message rate too high", QuotaExceeded: "quota exceeded",
	AdministrativeAction: "administrative action", PayloadFormatInvalid: "payload format invalid",
	RetainNotSupported: "retain not supported", QoSNotSupported: "QoS not supported",
	UseAnotherServer: "use another server", ServerMoved: "server moved",
	SharedSubscriptionsNotSupported:     "shared subscriptions not supported",
	ConnectionRateExceeded:              "connection rate exceeded",
	MaximumConnectTime:                  "maximum connect time",
	SubscriptionIdentifiersNotSupported: "subscription identifiers not supported",
	WildcardSubscriptionsNotSupported:   "wildcard subscriptions not supported",
}

// String is the MQTT 5 name of the code (0x00 reads "success").
func (c ReasonCode) String() string {
	if s, ok := reasonNames[c]; ok {
		return s
	}
	return "ReasonCode(0x" + strconv.FormatUint(uint64(c), 16) + ")"
}

// IsError reports whether c is a failure (0x80 and above, section 2.4).
func (c ReasonCode) IsError() bool { return c >= 0x80 }

// Error is a packet that cannot be decoded or encoded. Code is the MQTT 5
// reason code the specification names for the failure (MalformedPacket,
// ProtocolError, PacketTooLarge, UnsupportedProtocolVersion,
// TopicAliasInvalid); the server sends it in a DISCONNECT (MQTT 5) or a
// CONNACK, or just closes the connection (3.x).
type Error struct {
	Code ReasonCode
	// Msg names the rule broken, e.g. "MQTT-3.1.2-3: reserved flag set".
	Msg string
	// Type is the packet being decoded, when known (0 if the fixed header
	// itself was bad).
	Type Type
	// Version is the protocol level the packet was decoded for: for a
	// CONNECT the level it declared, once known to be one this package
	// speaks, so that the server can answer a bad CONNECT in the client's
	// own CONNACK format (0 if unknown).
	Version Version
}

func (e *Error) Error() string {
	s := "mqtt packet: "
	if e.Type != 0 {
		s += e.Type.String() + ": "
	}
	return s + e.Code.String() + ": " + e.Msg
}
