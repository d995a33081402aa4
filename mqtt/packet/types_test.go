package packet

import "testing"

func TestStrings(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{CONNECT.String(), "CONNECT"},
		{AUTH.String(), "AUTH"},
		{Type(0).String(), "Type(0)"},
		{V31.String(), "3.1"},
		{V5.String(), "5.0"},
		{Version(9).String(), "Version(9)"},
		{V31.ProtocolName(), "MQIsdp"},
		{V311.ProtocolName(), "MQTT"},
		{NormalDisconnection.String(), "success"},
		{TopicAliasInvalid.String(), "topic alias invalid"},
		{ReasonCode(0x03).String(), "ReasonCode(0x3)"},
		{(&Error{Code: MalformedPacket, Msg: "MQTT-3.1.2-3: reserved connect flag set", Type: CONNECT}).Error(),
			"mqtt packet: CONNECT: malformed packet: MQTT-3.1.2-3: reserved connect flag set"},
		{(&Error{Code: MalformedPacket, Msg: "2.1.2: reserved packet type 0"}).Error(),
			"mqtt packet: malformed packet: 2.1.2: reserved packet type 0"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	// Every reason code of every packet has a name.
	for _, set := range []*reasonSet{connackCodes, pubackCodes, pubrelCodes, subackCodes, unsubackCodes, disconnectCodes, authCodes} {
		for c := 0; c < 256; c++ {
			if set.has(ReasonCode(c)) {
				if _, ok := reasonNames[ReasonCode(c)]; !ok {
					t.Errorf("reason code 0x%02x has no name", c)
				}
			}
		}
	}
	if !UnspecifiedError.IsError() || NoMatchingSubscribers.IsError() {
		t.Error("IsError")
	}
}
