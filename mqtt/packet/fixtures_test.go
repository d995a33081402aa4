package packet

import (
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// unhex decodes hex written with spaces for readability.
func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(fmt.Sprintf("bad hex %q: %v", s, err))
	}
	return b
}

type fixture struct {
	name string
	v    Version
	p    Packet
	wire string // hex
	// decodeOnly marks a wire form Append does not produce (a longer
	// encoding the specification also allows).
	decodeOnly bool
}

// decodeVersion is the version a fixture is decoded with: a CONNECT is
// decoded in the state before CONNECT, where its own level decides.
func (f fixture) decodeVersion() Version {
	if f.p.Type() == CONNECT {
		return 0
	}
	return f.v
}

// v3Fixtures are the packets that are the same in 3.1 and 3.1.1.
func v3Fixtures(v Version) []fixture {
	s := v.String()
	return []fixture{
		{"PUBLISH qos0 " + s, v, &Publish{Topic: "a/b", Payload: []byte("hi")}, "30 07 0003 612f62 6869", false},
		{"PUBLISH qos1 dup retain " + s, v, &Publish{Dup: true, QoS: 1, Retain: true, Topic: "t", PacketID: 10, Payload: []byte("x")},
			"3b 06 0001 74 000a 78", false},
		{"PUBLISH qos2 empty payload " + s, v, &Publish{QoS: 2, Topic: "t", PacketID: 0x1234}, "34 05 0001 74 1234", false},
		{"PUBLISH 2-byte remaining length " + s, v, &Publish{Topic: "t", Payload: []byte(strings.Repeat("x", 197))},
			"30 c801 0001 74" + strings.Repeat("78", 197), false},
		{"PUBLISH non-minimal remaining length " + s, v, &Publish{Topic: "t", Payload: []byte("x")}, "30 8480 00 0001 74 78", true},
		{"PUBACK " + s, v, &Puback{PacketID: 1}, "40 02 0001", false},
		{"PUBREC " + s, v, &Pubrec{PacketID: 2}, "50 02 0002", false},
		{"PUBREL " + s, v, &Pubrel{PacketID: 3}, "62 02 0003", false},
		{"PUBCOMP " + s, v, &Pubcomp{PacketID: 4}, "70 02 0004", false},
		{"SUBSCRIBE " + s, v, &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a/#", QoS: 1}, {Filter: "b"}}},
			"82 0c 0001 0003 612f23 01 0001 62 00", false},
		{"SUBACK " + s, v, &Suback{PacketID: 1, ReasonCodes: []ReasonCode{GrantedQoS1, SubackFailure, GrantedQoS2, GrantedQoS0}},
			"90 06 0001 01 80 02 00", false},
		{"UNSUBSCRIBE " + s, v, &Unsubscribe{PacketID: 2, Filters: []string{"a/#", "b"}}, "a2 0a 0002 0003 612f23 0001 62", false},
		{"UNSUBACK " + s, v, &Unsuback{PacketID: 2}, "b0 02 0002", false},
		{"PINGREQ " + s, v, &Pingreq{}, "c0 00", false},
		{"PINGREQ non-minimal remaining length " + s, v, &Pingreq{}, "c0 80 00", true},
		{"PINGRESP " + s, v, &Pingresp{}, "d0 00", false},
		{"DISCONNECT " + s, v, &Disconnect{}, "e0 00", false},
	}
}

var userKV = []UserProperty{{"k", "v"}}

func fixtures() []fixture {
	fs := []fixture{
		// MQTT 3.1
		{"CONNECT 3.1", V31, &Connect{ProtocolName: "MQIsdp", Version: V31, CleanStart: true, KeepAlive: 60, ClientID: "c"},
			"10 0f 0006 4d5149736470 03 02 003c 0001 63", false},
		{"CONNECT 3.1 will username", V31, &Connect{ProtocolName: "MQIsdp", Version: V31, ClientID: "c",
			Will: &Will{Topic: "t", Payload: []byte("x"), QoS: 2}, UsernameFlag: true, Username: "u"},
			"10 18 0006 4d5149736470 03 94 0000 0001 63 0001 74 0001 78 0001 75", false},
		{"CONNACK 3.1", V31, &Connack{}, "20 02 00 00", false},
		{"CONNACK 3.1 refused", V31, &Connack{ReasonCode: ConnRefusedIdentifierRejected}, "20 02 00 02", false},
		{"CONNACK 3.1 ignores the unused byte", V31, &Connack{}, "20 02 01 00", true},

		// MQTT 3.1.1
		{"CONNECT 3.1.1", V311, &Connect{ProtocolName: "MQTT", Version: V311, CleanStart: true, KeepAlive: 60, ClientID: "c"},
			"10 0d 0004 4d515454 04 02 003c 0001 63", false},
		{"CONNECT 3.1.1 everything", V311, &Connect{ProtocolName: "MQTT", Version: V311, CleanStart: true, KeepAlive: 10, ClientID: "cid",
			Will:         &Will{Topic: "w", Payload: []byte("bye"), QoS: 1, Retain: true},
			UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("p")},
			"10 1d 0004 4d515454 04 ee 000a 0003 636964 0001 77 0003 627965 0001 75 0001 70", false},
		{"CONNECT 3.1.1 empty client id and user name", V311, &Connect{ProtocolName: "MQTT", Version: V311, CleanStart: true, UsernameFlag: true},
			"10 0e 0004 4d515454 04 82 0000 0000 0000", false},
		{"CONNACK 3.1.1 session present", V311, &Connack{SessionPresent: true}, "20 02 01 00", false},
		{"CONNACK 3.1.1 not authorized", V311, &Connack{ReasonCode: ConnRefusedNotAuthorized}, "20 02 00 05", false},

		// MQTT 5.0
		{"CONNECT 5", V5, &Connect{ProtocolName: "MQTT", Version: V5, CleanStart: true, KeepAlive: 60, ClientID: "c"},
			"10 0e 0004 4d515454 05 02 003c 00 0001 63", false},
		{"CONNECT 5 every property", V5, &Connect{ProtocolName: "MQTT", Version: V5, KeepAlive: 30, ClientID: "cid",
			Properties: Properties{
				SessionExpiryInterval: 120, HasSessionExpiryInterval: true,
				AuthenticationMethod: "SCRAM", AuthenticationData: []byte{1, 2},
				RequestProblemInformation: 0, HasRequestProblemInformation: true,
				RequestResponseInformation: 1, HasRequestResponseInformation: true,
				ReceiveMaximum: 100, HasReceiveMaximum: true,
				TopicAliasMaximum: 10, HasTopicAliasMaximum: true,
				UserProperties:    userKV,
				MaximumPacketSize: 1024, HasMaximumPacketSize: true,
			},
			Will: &Will{Topic: "w", Payload: []byte("bye"), QoS: 2, Properties: Properties{
				PayloadFormatIndicator: 1, HasPayloadFormatIndicator: true,
				MessageExpiryInterval: 60, HasMessageExpiryInterval: true,
				ContentType: "text", ResponseTopic: "r", CorrelationData: []byte{0xca, 0xfe},
				WillDelayInterval: 5, HasWillDelayInterval: true,
				UserProperties: []UserProperty{{"a", "b"}},
			}},
			UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("p")},
			"10 6a 0004 4d515454 05 d4 001e" +
				" 28 1100000078 1500055343524 14d 1600020102 1700 1901 210064 22000a 2600016b000176 2700000400" +
				" 0003 636964" +
				" 23 0101 020000003c 030004 74657874 080001 72 090002 cafe 1800000005 260001610001 62" +
				" 0001 77 0003 627965 0001 75 0001 70", false},
		// MQTT 5 drops MQTT-3.1.2-22: a password without a user name.
		{"CONNECT 5 password without user name", V5, &Connect{ProtocolName: "MQTT", Version: V5, ClientID: "c", PasswordFlag: true, Password: []byte("p")},
			"10 11 0004 4d515454 05 40 0000 00 0001 63 0001 70", false},
		{"CONNACK 5 every property", V5, &Connack{SessionPresent: true, Properties: Properties{
			SessionExpiryInterval: 0, HasSessionExpiryInterval: true,
			AssignedClientIdentifier: "auto-1",
			ServerKeepAlive:          30, HasServerKeepAlive: true,
			AuthenticationMethod: "SCRAM", AuthenticationData: []byte{3},
			ResponseInformation: "resp", ServerReference: "other", ReasonString: "ok",
			ReceiveMaximum: 20, HasReceiveMaximum: true,
			TopicAliasMaximum: 5, HasTopicAliasMaximum: true,
			MaximumQoS: 1, HasMaximumQoS: true,
			RetainAvailable: 0, HasRetainAvailable: true,
			UserProperties:    []UserProperty{{"x", "y"}},
			MaximumPacketSize: 65536, HasMaximumPacketSize: true,
			WildcardSubscriptionAvailable: 0, HasWildcardSubscriptionAvailable: true,
			SubscriptionIdentifierAvailable: 1, HasSubscriptionIdentifierAvailable: true,
			SharedSubscriptionAvailable: 0, HasSharedSubscriptionAvailable: true,
		}},
			"20 50 01 00 4d 1100000000 120006 6175746f2d31 13001e 1500055343524 14d 16000103 1a0004 72657370" +
				" 1c0005 6f74686572 1f0002 6f6b 210014 220005 2401 2500 2600017800017 9 2700010000 2800 2901 2a00", false},
		{"CONNACK 5 not authorized", V5, &Connack{ReasonCode: NotAuthorized}, "20 03 00 87 00", false},
		{"PUBLISH 5 every property", V5, &Publish{QoS: 1, Topic: "a/b", PacketID: 0x0102, Payload: []byte("hello"), Properties: Properties{
			PayloadFormatIndicator: 0, HasPayloadFormatIndicator: true,
			MessageExpiryInterval: 3600, HasMessageExpiryInterval: true,
			ContentType: "json", ResponseTopic: "reply", CorrelationData: []byte{1, 2, 3},
			SubscriptionIdentifier: []uint32{1, 128},
			TopicAlias:             7, HasTopicAlias: true,
			UserProperties: userKV,
		}},
			"32 38 0003 612f62 0102 2b 0100 0200000e10 0300046a736f6e 0800057265706c79 090003010203 0b01 0b8001 230007" +
				" 2600016b000176 68656c6c6f", false},
		{"PUBLISH 5 topic alias, empty topic", V5, &Publish{Payload: []byte("x"), Properties: Properties{TopicAlias: 1, HasTopicAlias: true}},
			"30 07 0000 03 230001 78", false},
		{"PUBLISH 5 qos0", V5, &Publish{Topic: "t", Payload: []byte("x")}, "30 05 0001 74 00 78", false},
		{"PUBLISH 5 two user properties with one key", V5, &Publish{Topic: "t", Properties: Properties{UserProperties: []UserProperty{{"k", "1"}, {"k", "2"}}}},
			"30 12 0001 74 0e 2600016b000131 2600016b000132", false},
		{"PUBACK 5 success", V5, &Puback{PacketID: 1}, "40 02 0001", false},
		{"PUBACK 5 reason only", V5, &Puback{PacketID: 1, ReasonCode: NoMatchingSubscribers}, "40 03 0001 10", false},
		{"PUBACK 5 properties", V5, &Puback{PacketID: 1, ReasonCode: NotAuthorized, Properties: Properties{ReasonString: "no", UserProperties: userKV}},
			"40 10 0001 87 0c 1f00026e6f 2600016b000176", false},
		{"PUBACK 5 success written out", V5, &Puback{PacketID: 1}, "40 03 0001 00", true},
		{"PUBACK 5 empty properties written out", V5, &Puback{PacketID: 1, ReasonCode: NoMatchingSubscribers}, "40 04 0001 10 00", true},
		{"PUBREC 5", V5, &Pubrec{PacketID: 2, ReasonCode: QuotaExceeded}, "50 03 0002 97", false},
		{"PUBREC 5 success", V5, &Pubrec{PacketID: 2}, "50 02 0002", false},
		{"PUBREL 5", V5, &Pubrel{PacketID: 3, ReasonCode: PacketIdentifierNotFound}, "62 03 0003 92", false},
		{"PUBREL 5 reason string", V5, &Pubrel{PacketID: 3, ReasonCode: PacketIdentifierNotFound, Properties: Properties{ReasonString: "x"}},
			"62 08 0003 92 04 1f000178", false},
		{"PUBREL 5 success", V5, &Pubrel{PacketID: 3}, "62 02 0003", false},
		{"PUBCOMP 5", V5, &Pubcomp{PacketID: 4, ReasonCode: PacketIdentifierNotFound}, "70 03 0004 92", false},
		{"PUBCOMP 5 success", V5, &Pubcomp{PacketID: 4}, "70 02 0004", false},
		{"SUBSCRIBE 5", V5, &Subscribe{PacketID: 5,
			Properties: Properties{SubscriptionIdentifier: []uint32{268435455}, UserProperties: userKV},
			Subscriptions: []Subscription{
				{Filter: "a/+", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
				{Filter: "$share/g/x", RetainHandling: 1},
			}},
			"82 22 0005 0c 0bffffff7f 2600016b000176 0003 612f2b 2e 000a 247368617265 2f672f78 10", false},
		{"SUBSCRIBE 5 non-minimal subscription identifier", V5, &Subscribe{PacketID: 5,
			Properties: Properties{SubscriptionIdentifier: []uint32{1}}, Subscriptions: []Subscription{{Filter: "a"}}},
			"82 0a 0005 03 0b8100 0001 61 00", true},
		{"SUBACK 5", V5, &Suback{PacketID: 5, Properties: Properties{ReasonString: "r"},
			ReasonCodes: []ReasonCode{GrantedQoS2, SharedSubscriptionsNotSupported}},
			"90 09 0005 04 1f000172 02 9e", false},
		{"SUBACK 5 no properties", V5, &Suback{PacketID: 6, ReasonCodes: []ReasonCode{GrantedQoS0}}, "90 04 0006 00 00", false},
		{"UNSUBSCRIBE 5", V5, &Unsubscribe{PacketID: 7, Properties: Properties{UserProperties: userKV}, Filters: []string{"a"}},
			"a2 0d 0007 07 2600016b000176 0001 61", false},
		{"UNSUBACK 5", V5, &Unsuback{PacketID: 7, ReasonCodes: []ReasonCode{Success, NoSubscriptionExisted}}, "b0 05 0007 00 00 11", false},
		{"UNSUBACK 5 reason string", V5, &Unsuback{PacketID: 7, Properties: Properties{ReasonString: "r"}, ReasonCodes: []ReasonCode{NotAuthorized}},
			"b0 08 0007 04 1f000172 87", false},
		{"PINGREQ 5", V5, &Pingreq{}, "c0 00", false},
		{"PINGRESP 5", V5, &Pingresp{}, "d0 00", false},
		{"DISCONNECT 5", V5, &Disconnect{}, "e0 00", false},
		{"DISCONNECT 5 with will", V5, &Disconnect{ReasonCode: DisconnectWithWill}, "e0 01 04", false},
		{"DISCONNECT 5 every property", V5, &Disconnect{ReasonCode: UseAnotherServer, Properties: Properties{
			SessionExpiryInterval: 10, HasSessionExpiryInterval: true, ServerReference: "s", ReasonString: "x", UserProperties: userKV}},
			"e0 16 9c 14 110000000a 1c000173 1f000178 2600016b000176", false},
		{"DISCONNECT 5 success written out", V5, &Disconnect{}, "e0 01 00", true},
		{"DISCONNECT 5 empty properties written out", V5, &Disconnect{}, "e0 02 00 00", true},
		{"AUTH 5", V5, &Auth{}, "f0 00", false},
		{"AUTH 5 reason only", V5, &Auth{ReasonCode: ReAuthenticate}, "f0 01 19", false},
		{"AUTH 5 every property", V5, &Auth{ReasonCode: ContinueAuthentication, Properties: Properties{
			AuthenticationMethod: "SCRAM", AuthenticationData: []byte{1, 2}, ReasonString: "x", UserProperties: userKV}},
			"f0 1a 18 18 1500055343524 14d 1600020102 1f000178 2600016b000176", false},
	}
	fs = append(fs, v3Fixtures(V31)...)
	return append(fs, v3Fixtures(V311)...)
}

func TestFixtures(t *testing.T) {
	seen := map[Version]map[Type]bool{V31: {}, V311: {}, V5: {}}
	for _, f := range fixtures() {
		t.Run(f.name, func(t *testing.T) {
			wire := unhex(f.wire)
			seen[f.v][f.p.Type()] = true
			if !f.decodeOnly {
				got, err := Append(nil, f.p, f.v)
				if err != nil {
					t.Fatalf("Append: %v", err)
				}
				if !reflect.DeepEqual(got, wire) {
					t.Errorf("Append:\n got % x\nwant % x", got, wire)
				}
				if n := Size(f.p, f.v); n != len(wire) {
					t.Errorf("Size = %d, want %d", n, len(wire))
				}
			}
			// A trailing byte belongs to the next packet: Decode must leave it.
			p, n, err := Decode(append(wire, 0xff), f.decodeVersion())
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if n != len(wire) {
				t.Errorf("Decode took %d bytes, want %d", n, len(wire))
			}
			if !reflect.DeepEqual(p, f.p) {
				t.Errorf("Decode:\n got %+v\nwant %+v", p, f.p)
			}
		})
	}
	for v, types := range seen {
		for ty := CONNECT; ty <= AUTH; ty++ {
			if !types[ty] && !(ty == AUTH && v != V5) {
				t.Errorf("no fixture for %s in %s", ty, v)
			}
		}
	}
}

// TestEveryPropertyInFixtures checks the fixtures carry each MQTT 5
// property at least once.
func TestEveryPropertyInFixtures(t *testing.T) {
	var all propMask
	add := func(p *Properties) {
		m, _ := p.measure()
		all |= m
	}
	for _, f := range fixtures() {
		switch p := f.p.(type) {
		case *Connect:
			add(&p.Properties)
			if p.Will != nil {
				add(&p.Will.Properties)
			}
		case *Connack:
			add(&p.Properties)
		case *Publish:
			add(&p.Properties)
		case *Puback:
			add(&p.Properties)
		case *Pubrel:
			add(&p.Properties)
		case *Subscribe:
			add(&p.Properties)
		case *Suback:
			add(&p.Properties)
		case *Unsubscribe:
			add(&p.Properties)
		case *Unsuback:
			add(&p.Properties)
		case *Disconnect:
			add(&p.Properties)
		case *Auth:
			add(&p.Properties)
		}
	}
	for id := range propNames {
		if all&bit(id) == 0 {
			t.Errorf("no fixture carries %s", propName(id))
		}
	}
}
