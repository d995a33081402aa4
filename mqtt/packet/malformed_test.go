package packet

import (
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

// connect5 frames an MQTT 5 CONNECT (client id "c") with connect flags,
// properties (hex, without their length) and payload after the client id.
func connect5(flags, props, after string) string {
	body := "0004 4d515454 05 " + flags + " 003c " + hexVBI(len(unhex(props))) + props + " 0001 63 " + after
	return "10 " + hexVBI(len(unhex(body))) + body
}

// connect311 frames an MQTT 3.1.1 CONNECT (client id "c").
func connect311(flags, after string) string {
	body := "0004 4d515454 04 " + flags + " 003c 0001 63 " + after
	return "10 " + hexVBI(len(unhex(body))) + body
}

func hexVBI(n int) string {
	return " " + hex.EncodeToString(appendVBI(nil, uint32(n))) + " "
}

type badInput struct {
	name string
	v    Version // 0: before CONNECT
	wire string
	code ReasonCode
	rule string // the conformance statement or section the error must name
}

var badInputs = []badInput{
	// Fixed header (section 2.1).
	{"reserved type 0", V311, "00 00", MalformedPacket, "2.1.2"},
	{"AUTH in 3.1.1", V311, "f0 00", MalformedPacket, "reserved packet type 15"},
	{"AUTH in 3.1", V31, "f0 00", MalformedPacket, "reserved packet type 15"},
	{"PUBLISH QoS 3", V311, "36 03 0001 74", MalformedPacket, "MQTT-3.3.1-4"},
	{"PUBLISH QoS 3 in 5", V5, "36 04 0001 74 00", MalformedPacket, "MQTT-3.3.1-4"},
	{"PUBLISH DUP with QoS 0", V311, "38 03 0001 74", MalformedPacket, "MQTT-3.3.1-2"},
	{"PUBREL flags 0", V311, "60 02 0001", MalformedPacket, "MQTT-3.6.1-1"},
	{"PUBREL flags 3", V5, "63 02 0001", MalformedPacket, "MQTT-3.6.1-1"},
	{"SUBSCRIBE flags 0", V311, "80 06 0001 0001 61 00", MalformedPacket, "MQTT-3.8.1-1"},
	{"UNSUBSCRIBE flags 0", V311, "a0 05 0001 0001 61", MalformedPacket, "MQTT-3.10.1-1"},
	{"PUBACK flags 1", V311, "41 02 0001", MalformedPacket, "MQTT-2.2.2-1"},
	{"CONNACK flags 2", V5, "22 03 00 00 00", MalformedPacket, "MQTT-2.1.3-1"},
	{"PINGREQ flags 8", V5, "c8 00", MalformedPacket, "MQTT-2.1.3-1"},
	{"DISCONNECT flags", V311, "e1 00", MalformedPacket, "MQTT-2.2.2-1"},
	{"AUTH flags", V5, "f1 00", MalformedPacket, "MQTT-2.1.3-1"},
	{"remaining length of 5 bytes", V311, "30 ffffffff7f", MalformedPacket, "MQTT-1.5.5"},
	{"remaining length of 5 bytes, 5th missing", V5, "30 80808080", MalformedPacket, "MQTT-1.5.5"},

	// Connection state.
	{"first packet not CONNECT", 0, "c0 00", ProtocolError, "MQTT-3.1.0-1"},
	{"first packet PUBLISH", 0, "30 03 0001 74", ProtocolError, "MQTT-3.1.0-1"},
	{"second CONNECT", V311, connect311("02", ""), ProtocolError, "MQTT-3.1.0-2"},

	// Bytes past the last field.
	{"PINGREQ with a body", V311, "c0 01 00", MalformedPacket, "after the last field"},
	{"PINGRESP with a body", V5, "d0 01 00", MalformedPacket, "after the last field"},
	{"DISCONNECT 3.1.1 with a body", V311, "e0 01 00", MalformedPacket, "after the last field"},
	{"PUBACK 3.1.1 with a reason code", V311, "40 03 0001 00", MalformedPacket, "after the last field"},
	{"PUBREC 3.1 with a reason code", V31, "50 03 0001 00", MalformedPacket, "after the last field"},
	{"UNSUBACK 3.1.1 with reason codes", V311, "b0 03 0001 00", MalformedPacket, "after the last field"},
	{"CONNACK 3.1.1 long", V311, "20 03 00 00 00", MalformedPacket, "after the last field"},
	{"CONNECT with a byte after the payload", 0, connect311("02", "00"), MalformedPacket, "after the last field"},
	{"PUBACK 5 after properties", V5, "40 05 0001 00 00 00", MalformedPacket, "after the last field"},
	{"DISCONNECT 5 after properties", V5, "e0 03 00 00 00", MalformedPacket, "after the last field"},

	// Fields running past the remaining length.
	{"PUBACK short", V311, "40 01 00", MalformedPacket, "runs past"},
	{"PUBLISH topic past the end", V311, "30 03 0005 74", MalformedPacket, "runs past"},
	{"PUBLISH 5 without property length", V5, "30 03 0001 74", MalformedPacket, "runs past"},
	{"CONNECT cut in the protocol name", 0, "10 03 0004 4d", MalformedPacket, "runs past"},
	{"CONNECT without client id", 0, "10 0a 0004 4d515454 04 02 003c", MalformedPacket, "runs past"},
	{"CONNECT will flag without will topic", 0, connect311("06", ""), MalformedPacket, "runs past"},
	{"CONNECT user name flag without user name", 0, connect311("82", ""), MalformedPacket, "runs past"},
	{"SUBSCRIBE without options byte", V311, "82 05 0001 0001 61", MalformedPacket, "runs past"},

	// UTF-8 strings (MQTT-1.5.4-1, -2; 3.1.1 MQTT-1.5.3-1, -2).
	{"topic not UTF-8", V311, "30 03 0001 ff", MalformedPacket, "MQTT-1.5.4-1"},
	{"topic with a surrogate", V311, "30 05 0003 eda080", MalformedPacket, "MQTT-1.5.4-1"},
	{"topic with an overlong encoding", V5, "30 05 0002 c080 00", MalformedPacket, "MQTT-1.5.4-1"},
	{"topic with U+0000", V311, "30 03 0001 00", MalformedPacket, "MQTT-1.5.4-2"},
	{"client id with U+0000", 0, "10 0d 0004 4d515454 04 02 003c 0001 00", MalformedPacket, "MQTT-1.5.4-2"},
	{"filter not UTF-8", V311, "82 06 0001 0001 fe 00", MalformedPacket, "MQTT-1.5.4-1"},
	{"user property key with a surrogate", V5, "30 0c 0001 74 08 26 0003 edbfbf 0000", MalformedPacket, "MQTT-1.5.4-1"},

	// CONNECT (section 3.1).
	{"CONNECT reserved flag", 0, connect311("03", ""), MalformedPacket, "MQTT-3.1.2-3"},
	{"CONNECT 5 reserved flag", 0, connect5("01", "", ""), MalformedPacket, "MQTT-3.1.2-3"},
	{"CONNECT will QoS without will flag", 0, connect311("0a", ""), MalformedPacket, "MQTT-3.1.2-13"},
	{"CONNECT 5 will QoS without will flag", 0, connect5("10", "", ""), MalformedPacket, "MQTT-3.1.2-11"},
	{"CONNECT will retain without will flag", 0, connect311("22", ""), MalformedPacket, "MQTT-3.1.2-15"},
	{"CONNECT 5 will retain without will flag", 0, connect5("20", "", ""), MalformedPacket, "MQTT-3.1.2-13"},
	{"CONNECT will QoS 3", 0, connect311("1e", "0001 74 0001 78"), MalformedPacket, "MQTT-3.1.2-14"},
	{"CONNECT 5 will QoS 3", 0, connect5("1c", "", "00 0001 74 0001 78"), MalformedPacket, "MQTT-3.1.2-12"},
	{"CONNECT password without user name", 0, connect311("42", "0001 70"), MalformedPacket, "MQTT-3.1.2-22"},
	{"CONNECT 3.1 password without user name", 0, "10 12 0006 4d5149736470 03 42 003c 0001 63 0001 70", MalformedPacket, "MQTT-3.1.2-22"},
	{"CONNECT name MQTT with level 3", 0, "10 0d 0004 4d515454 03 02 003c 0001 63", UnsupportedProtocolVersion, "MQTT-3.1.2-1"},
	{"CONNECT name MQIsdp with level 4", 0, "10 0f 0006 4d5149736470 04 02 003c 0001 63", UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"CONNECT level 6", 0, "10 0d 0004 4d515454 06 02 003c 0001 63", UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"CONNECT level 0x84 (bridge bit)", 0, "10 0d 0004 4d515454 84 02 003c 0001 63", UnsupportedProtocolVersion, "MQTT-3.1.2-2"},
	{"CONNECT name MQTX", 0, "10 0d 0004 4d515458 04 02 003c 0001 63", UnsupportedProtocolVersion, "MQTT-3.1.2-1"},
	{"CONNECT 5 receive maximum 0", 0, connect5("02", "21 0000", ""), ProtocolError, "3.1.2.11.3"},
	{"CONNECT 5 maximum packet size 0", 0, connect5("02", "27 00000000", ""), ProtocolError, "3.1.2.11.4"},
	{"CONNECT 5 request problem information 2", 0, connect5("02", "17 02", ""), ProtocolError, "request problem information"},
	{"CONNECT 5 request response information 2", 0, connect5("02", "19 02", ""), ProtocolError, "request response information"},
	{"CONNECT 5 authentication data without method", 0, connect5("02", "16 0001 01", ""), ProtocolError, "3.1.2.11.10"},
	{"CONNECT 5 session expiry twice", 0, connect5("02", "11 00000001 11 00000002", ""), ProtocolError, "more than once"},
	{"CONNECT 5 topic alias (PUBLISH only)", 0, connect5("02", "23 0001", ""), MalformedPacket, "not allowed in CONNECT"},
	{"CONNECT 5 will property not allowed", 0, connect5("06", "", "05 11 00000001 0001 74 0001 78"), MalformedPacket, "not allowed in will"},
	{"CONNECT 5 will payload format 2", 0, connect5("06", "", "02 01 02 0001 74 0001 78"), ProtocolError, "payload format indicator"},

	// CONNACK (section 3.2).
	{"CONNACK 3.1.1 reserved flags", V311, "20 02 02 00", MalformedPacket, "3.2.2.1"},
	{"CONNACK 3.1.1 return code 6", V311, "20 02 00 06", MalformedPacket, "reserved return code"},
	{"CONNACK 3.1.1 session present with refusal", V311, "20 02 01 05", ProtocolError, "MQTT-3.2.2-4"},
	{"CONNACK 5 session present with refusal", V5, "20 03 01 87 00", ProtocolError, "MQTT-3.2.2-6"},
	{"CONNACK 5 reason code 0x01", V5, "20 03 00 01 00", MalformedPacket, "MQTT-3.2.2-8"},
	{"CONNACK 5 maximum packet size 0", V5, "20 08 00 00 05 27 00000000", ProtocolError, "3.1.2.11.4"},
	{"CONNACK 5 receive maximum 0", V5, "20 06 00 00 03 21 0000", ProtocolError, "3.1.2.11.3"},
	{"CONNACK 5 maximum QoS 2", V5, "20 05 00 00 02 24 02", ProtocolError, "maximum QoS"},
	{"CONNACK 5 retain available 2", V5, "20 05 00 00 02 25 02", ProtocolError, "retain available"},
	{"CONNACK 5 wildcard available 2", V5, "20 05 00 00 02 28 02", ProtocolError, "wildcard"},
	{"CONNACK 5 subscription identifier available 2", V5, "20 05 00 00 02 29 02", ProtocolError, "subscription identifier available"},
	{"CONNACK 5 shared available 2", V5, "20 05 00 00 02 2a 02", ProtocolError, "shared"},
	{"CONNACK 5 will delay (will only)", V5, "20 08 00 00 05 18 00000001", MalformedPacket, "not allowed in CONNACK"},

	// PUBLISH (section 3.3) and packet identifiers.
	{"PUBLISH QoS 1 packet identifier 0", V311, "32 05 0001 74 0000", ProtocolError, "MQTT-2.3.1-1"},
	{"PUBLISH 5 QoS 2 packet identifier 0", V5, "34 06 0001 74 0000 00", ProtocolError, "MQTT-2.2.1-3"},
	{"PUBLISH empty topic", V311, "30 02 0000", ProtocolError, "MQTT-4.7.3-1"},
	{"PUBLISH 5 empty topic without alias", V5, "30 03 0000 00", ProtocolError, "3.3.2.1"},
	{"PUBLISH 5 topic alias 0", V5, "30 07 0001 74 03 230000", TopicAliasInvalid, "MQTT-3.3.2-8"},
	{"PUBLISH 5 topic alias twice", V5, "30 0a 0001 74 06 230001 230002", ProtocolError, "more than once"},
	{"PUBLISH 5 reason string (not allowed)", V5, "30 08 0001 74 04 1f000178", MalformedPacket, "not allowed in PUBLISH"},
	{"PUBLISH 5 unknown property 0x07", V5, "30 06 0001 74 02 0700", MalformedPacket, "not allowed in PUBLISH"},
	{"PUBLISH 5 property identifier over 4 bytes", V5, "30 09 0001 74 05 8080808001", MalformedPacket, "longer than 4 bytes"},
	{"PUBLISH 5 message expiry twice", V5, "30 0e 0001 74 0a 0200000001 0200000002", ProtocolError, "more than once"},
	{"PUBLISH 5 property length past the packet", V5, "30 05 0001 74 05 01", MalformedPacket, "property length"},
	{"PUBLISH 5 property value past the property length", V5, "30 06 0001 74 01 02 00", MalformedPacket, "runs past"},
	{"PUBLISH 5 property length over 4 bytes", V5, "30 08 0001 74 8080808001", MalformedPacket, "longer than 4 bytes"},
	{"PUBLISH 5 subscription identifier 0", V5, "30 06 0001 74 02 0b00", ProtocolError, "subscription identifier 0"},
	{"PUBLISH 5 subscription identifier over 4 bytes", V5, "30 0a 0001 74 06 0b 8080808001", MalformedPacket, "longer than 4 bytes"},
	{"PUBLISH 5 payload format indicator 2", V5, "30 06 0001 74 02 0102", ProtocolError, "payload format indicator"},
	{"PUBLISH 5 correlation data past the properties", V5, "30 08 0001 74 04 090005 01", MalformedPacket, "runs past"},

	// Acknowledgements.
	{"PUBACK packet identifier 0", V311, "40 02 0000", ProtocolError, "MQTT-2.3.1-1"},
	{"PUBREC packet identifier 0", V5, "50 02 0000", ProtocolError, "MQTT-2.2.1-3"},
	{"PUBREL packet identifier 0", V311, "62 02 0000", ProtocolError, "MQTT-2.3.1-1"},
	{"PUBCOMP packet identifier 0", V5, "70 03 0000 00", ProtocolError, "MQTT-2.2.1-3"},
	{"SUBACK packet identifier 0", V311, "90 03 0000 00", ProtocolError, "MQTT-2.3.1-1"},
	{"UNSUBACK packet identifier 0", V311, "b0 02 0000", ProtocolError, "MQTT-2.3.1-1"},
	{"PUBACK 5 reason code 0x92", V5, "40 03 0001 92", MalformedPacket, "MQTT-3.4.2-1"},
	{"PUBREC 5 reason code 0x04", V5, "50 03 0001 04", MalformedPacket, "MQTT-3.5.2-1"},
	{"PUBREL 5 reason code 0x10", V5, "62 03 0001 10", MalformedPacket, "MQTT-3.6.2-1"},
	{"PUBCOMP 5 reason code 0x80", V5, "70 03 0001 80", MalformedPacket, "MQTT-3.7.2-1"},
	{"PUBACK 5 user property twice is fine, reason string twice is not", V5, "40 0c 0001 00 08 1f000178 1f000179", ProtocolError, "more than once"},
	{"PUBACK 5 session expiry (not allowed)", V5, "40 09 0001 00 05 1100000001", MalformedPacket, "not allowed"},

	// SUBSCRIBE (section 3.8).
	{"SUBSCRIBE packet identifier 0", V311, "82 06 0000 0001 61 00", ProtocolError, "MQTT-2.3.1-1"},
	{"SUBSCRIBE no filter", V311, "82 02 0001", ProtocolError, "MQTT-3.8.3-3"},
	{"SUBSCRIBE 5 no filter", V5, "82 03 0001 00", ProtocolError, "MQTT-3.8.3-2"},
	{"SUBSCRIBE reserved option bits", V311, "82 06 0001 0001 61 04", MalformedPacket, "MQTT-3-8.3-4"},
	{"SUBSCRIBE QoS 3", V311, "82 06 0001 0001 61 03", MalformedPacket, "MQTT-3-8.3-4"},
	{"SUBSCRIBE 5 reserved option bits", V5, "82 07 0001 00 0001 61 40", MalformedPacket, "MQTT-3.8.3-5"},
	{"SUBSCRIBE 5 retain handling 3", V5, "82 07 0001 00 0001 61 30", ProtocolError, "retain handling 3"},
	// 5.0 section 3.8.3.1 makes Maximum QoS 3 a Protocol Error.
	{"SUBSCRIBE 5 QoS 3", V5, "82 07 0001 00 0001 61 03", ProtocolError, "maximum QoS 3"},
	{"SUBSCRIBE 5 two subscription identifiers", V5, "82 0b 0001 04 0b01 0b02 0001 61 00", ProtocolError, "more than once"},
	{"SUBSCRIBE 5 subscription identifier 0", V5, "82 09 0001 02 0b00 0001 61 00", ProtocolError, "subscription identifier 0"},
	{"SUBSCRIBE 5 reason string (not allowed)", V5, "82 0b 0001 04 1f000178 0001 61 00", MalformedPacket, "not allowed in SUBSCRIBE"},

	// SUBACK (section 3.9).
	{"SUBACK 3.1.1 return code 3", V311, "90 03 0001 03", MalformedPacket, "MQTT-3.9.3-2"},
	{"SUBACK 3.1.1 no return code", V311, "90 02 0001", ProtocolError, "no reason codes"},
	{"SUBACK 5 no reason code", V5, "90 03 0001 00", ProtocolError, "no reason codes"},
	{"SUBACK 5 reason code 0x11", V5, "90 04 0001 00 11", MalformedPacket, "MQTT-3.9.3-2"},

	// UNSUBSCRIBE and UNSUBACK (sections 3.10, 3.11).
	{"UNSUBSCRIBE packet identifier 0", V5, "a2 06 0000 00 0001 61", ProtocolError, "MQTT-2.2.1-3"},
	{"UNSUBSCRIBE no filter", V311, "a2 02 0001", ProtocolError, "MQTT-3.10.3-2"},
	{"UNSUBSCRIBE 5 no filter", V5, "a2 03 0001 00", ProtocolError, "MQTT-3.10.3-2"},
	{"UNSUBSCRIBE 5 subscription identifier (not allowed)", V5, "a2 08 0001 02 0b01 0001 61", MalformedPacket, "not allowed in UNSUBSCRIBE"},
	{"UNSUBACK 5 no reason code", V5, "b0 03 0001 00", ProtocolError, "no reason codes"},
	{"UNSUBACK 5 reason code 0x02", V5, "b0 04 0001 00 02", MalformedPacket, "MQTT-3.11.3-2"},

	// DISCONNECT and AUTH (sections 3.14, 3.15).
	{"DISCONNECT 5 reason code 0x01", V5, "e0 01 01", MalformedPacket, "MQTT-3.14.2-1"},
	{"DISCONNECT 5 topic alias (not allowed)", V5, "e0 05 00 03 230001", MalformedPacket, "not allowed in DISCONNECT"},
	{"DISCONNECT 5 property length past the packet", V5, "e0 02 00 05", MalformedPacket, "property length"},
	{"AUTH 5 reason code 0x80", V5, "f0 01 80", MalformedPacket, "MQTT-3.15.2-1"},
	{"AUTH 5 method twice", V5, "f0 0a 18 08 15000161 15000162", ProtocolError, "more than once"},
}

func TestMalformed(t *testing.T) {
	for _, c := range badInputs {
		t.Run(c.name, func(t *testing.T) {
			wire := unhex(c.wire)
			p, n, err := Decode(wire, c.v)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode(% x) = %+v, %d, %v; want an *Error", wire, p, n, err)
			}
			if e.Code != c.code {
				t.Errorf("code %s (%v), want %s", e.Code, e, c.code)
			}
			if !strings.Contains(e.Msg, c.rule) {
				t.Errorf("message %q does not name %q", e.Msg, c.rule)
			}
			// The Reader must agree.
			_, rerr := NewReader(strings.NewReader(string(wire)), 0).ReadPacket(c.v)
			if !errors.As(rerr, &e) || e.Code != c.code {
				t.Errorf("ReadPacket: %v, want code %s", rerr, c.code)
			}
		})
	}
}

// TestErrorVersion checks a failed CONNECT reports the level it declared,
// which the server needs to pick its CONNACK format.
func TestErrorVersion(t *testing.T) {
	for _, c := range []struct {
		wire string
		want Version
	}{
		{connect5("01", "", ""), V5},
		{connect311("03", ""), V311},
		{"10 0d 0004 4d515454 06 02 003c 0001 63", 0},
	} {
		_, _, err := Decode(unhex(c.wire), 0)
		var e *Error
		if !errors.As(err, &e) || e.Version != c.want || e.Type != CONNECT {
			t.Errorf("%s: %v (version %v), want version %v", c.wire, err, e.Version, c.want)
		}
	}
}

// TestAppendRefuses checks Append refuses what Decode would refuse.
func TestAppendRefuses(t *testing.T) {
	long := strings.Repeat("x", 65536)
	for _, c := range []struct {
		name string
		p    Packet
		v    Version
		code ReasonCode
	}{
		{"PUBLISH QoS 3", &Publish{QoS: 3, Topic: "t", PacketID: 1}, V311, MalformedPacket},
		{"PUBLISH DUP QoS 0", &Publish{Dup: true, Topic: "t"}, V311, MalformedPacket},
		{"PUBLISH packet identifier 0", &Publish{QoS: 1, Topic: "t"}, V5, ProtocolError},
		{"PUBLISH topic too long", &Publish{Topic: long}, V311, MalformedPacket},
		{"PUBLISH topic not UTF-8", &Publish{Topic: "\xff"}, V311, MalformedPacket},
		{"PUBLISH topic with U+0000", &Publish{Topic: "a\x00"}, V5, MalformedPacket},
		{"PUBLISH empty topic", &Publish{}, V311, ProtocolError},
		{"PUBLISH 3.1.1 empty topic with alias", &Publish{Properties: Properties{TopicAlias: 1, HasTopicAlias: true}}, V311, ProtocolError},
		{"PUBLISH topic alias 0", &Publish{Topic: "t", Properties: Properties{HasTopicAlias: true}}, V5, TopicAliasInvalid},
		{"PUBLISH reason string", &Publish{Topic: "t", Properties: Properties{ReasonString: "x"}}, V5, MalformedPacket},
		{"PUBLISH subscription identifier 0", &Publish{Topic: "t", Properties: Properties{SubscriptionIdentifier: []uint32{0}}}, V5, ProtocolError},
		{"PUBLISH subscription identifier too large", &Publish{Topic: "t", Properties: Properties{SubscriptionIdentifier: []uint32{1 << 28}}}, V5, ProtocolError},
		{"PUBLISH payload format 2", &Publish{Topic: "t", Properties: Properties{PayloadFormatIndicator: 2, HasPayloadFormatIndicator: true}}, V5, ProtocolError},
		{"PUBLISH user property not UTF-8", &Publish{Topic: "t", Properties: Properties{UserProperties: []UserProperty{{"\xc0\x80", ""}}}}, V5, MalformedPacket},
		{"PUBLISH correlation data too long", &Publish{Topic: "t", Properties: Properties{CorrelationData: make([]byte, 65536)}}, V5, MalformedPacket},
		{"CONNECT will QoS 3", &Connect{Will: &Will{Topic: "t", QoS: 3}}, V311, MalformedPacket},
		{"CONNECT password without user name", &Connect{PasswordFlag: true}, V311, MalformedPacket},
		{"CONNECT user name without flag", &Connect{Username: "u"}, V5, MalformedPacket},
		{"CONNECT password without flag", &Connect{Password: []byte("p")}, V5, MalformedPacket},
		{"CONNECT receive maximum 0", &Connect{Properties: Properties{HasReceiveMaximum: true}}, V5, ProtocolError},
		{"CONNECT authentication data without method", &Connect{Properties: Properties{AuthenticationData: []byte{1}}}, V5, ProtocolError},
		{"CONNECT will delay outside the will", &Connect{Properties: Properties{HasWillDelayInterval: true}}, V5, MalformedPacket},
		{"CONNECT without a version", &Connect{}, 0, 0},
		{"CONNACK 3.1.1 code 0x87", &Connack{ReasonCode: NotAuthorized}, V311, MalformedPacket},
		{"CONNACK 5 code 0x01", &Connack{ReasonCode: 1}, V5, MalformedPacket},
		{"CONNACK session present with refusal", &Connack{SessionPresent: true, ReasonCode: 5}, V311, ProtocolError},
		{"CONNACK maximum QoS 2", &Connack{Properties: Properties{MaximumQoS: 2, HasMaximumQoS: true}}, V5, ProtocolError},
		{"PUBACK packet identifier 0", &Puback{}, V311, ProtocolError},
		{"PUBREL 5 code 0x10", &Pubrel{PacketID: 1, ReasonCode: NoMatchingSubscribers}, V5, MalformedPacket},
		{"SUBSCRIBE no filter", &Subscribe{PacketID: 1}, V311, ProtocolError},
		{"SUBSCRIBE QoS 3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", QoS: 3}}}, V311, MalformedPacket},
		{"SUBSCRIBE 5 QoS 3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", QoS: 3}}}, V5, ProtocolError},
		{"SUBSCRIBE retain handling 3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", RetainHandling: 3}}}, V5, ProtocolError},
		{"SUBSCRIBE two subscription identifiers", &Subscribe{PacketID: 1, Properties: Properties{SubscriptionIdentifier: []uint32{1, 2}},
			Subscriptions: []Subscription{{Filter: "a"}}}, V5, ProtocolError},
		{"SUBACK 3.1.1 code 0x87", &Suback{PacketID: 1, ReasonCodes: []ReasonCode{NotAuthorized}}, V311, MalformedPacket},
		{"SUBACK no codes", &Suback{PacketID: 1}, V5, ProtocolError},
		{"UNSUBSCRIBE no filter", &Unsubscribe{PacketID: 1}, V5, ProtocolError},
		{"UNSUBACK 5 no codes", &Unsuback{PacketID: 1}, V5, ProtocolError},
		{"DISCONNECT 5 code 0x01", &Disconnect{ReasonCode: 1}, V5, MalformedPacket},
		{"AUTH in 3.1.1", &Auth{}, V311, ProtocolError},
		{"AUTH 5 code 0x01", &Auth{ReasonCode: 1}, V5, MalformedPacket},
		{"unknown version", &Pingreq{}, 6, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := []byte("keep")
			out, err := Append(dst, c.p, c.v)
			if err == nil {
				t.Fatalf("Append = % x, want an error", out)
			}
			if string(out) != "keep" {
				t.Errorf("Append changed dst on error: %q", out)
			}
			var e *Error
			if c.code == 0 {
				if !errors.Is(err, ErrVersion) {
					t.Errorf("error %v, want ErrVersion", err)
				}
				return
			}
			if !errors.As(err, &e) || e.Code != c.code {
				t.Errorf("error %v, want code %s", err, c.code)
			}
		})
	}
}

// TestDecodeIncomplete checks a buffer holding part of a packet asks for
// more instead of failing.
func TestDecodeIncomplete(t *testing.T) {
	for _, f := range fixtures() {
		wire := unhex(f.wire)
		for i := 0; i < len(wire); i++ {
			_, _, err := Decode(wire[:i], f.decodeVersion())
			want := io.ErrUnexpectedEOF
			if i == 0 {
				want = io.EOF
			}
			if err != want {
				t.Fatalf("%s: Decode of %d of %d bytes: %v, want %v", f.name, i, len(wire), err, want)
			}
		}
	}
}
