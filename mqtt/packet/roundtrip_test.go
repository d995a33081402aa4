package packet

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// gen makes random valid packets: values the codec must carry unchanged.
type gen struct{ r *rand.Rand }

var genRunes = []rune("ab/+#$ é日😀\u007f")

func (g gen) str(min int) string {
	rs := make([]rune, min+g.r.IntN(6))
	for i := range rs {
		rs[i] = genRunes[g.r.IntN(len(genRunes))]
	}
	return string(rs)
}

// bin is nil or non-empty: an empty binary field decodes as nil.
func (g gen) bin() []byte {
	if g.r.IntN(3) == 0 {
		return nil
	}
	b := make([]byte, 1+g.r.IntN(8))
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return b
}

func (g gen) maybe() bool { return g.r.IntN(3) == 0 }

func (g gen) u16() uint16 { return uint16(g.r.Uint32()) }

func (g gen) nz16() uint16 { return uint16(1 + g.r.IntN(65535)) }

func (g gen) props(ctx propCtx) Properties {
	var p Properties
	// In identifier order, not map order, so that a seed makes one sequence.
	for id := uint32(0); id < 64; id++ {
		if allowed[ctx]&bit(id) == 0 || !g.maybe() {
			continue
		}
		switch id {
		case propPayloadFormatIndicator:
			p.PayloadFormatIndicator, p.HasPayloadFormatIndicator = byte(g.r.IntN(2)), true
		case propMessageExpiryInterval:
			p.MessageExpiryInterval, p.HasMessageExpiryInterval = g.r.Uint32(), true
		case propContentType:
			p.ContentType = g.str(0)
		case propResponseTopic:
			p.ResponseTopic = g.str(0)
		case propCorrelationData:
			p.CorrelationData = g.bin()
		case propSubscriptionIdentifier:
			n := 1
			if ctx == ctxPublish {
				n += g.r.IntN(3)
			}
			for range n {
				p.SubscriptionIdentifier = append(p.SubscriptionIdentifier, 1+uint32(g.r.IntN(maxVBI)))
			}
		case propSessionExpiryInterval:
			p.SessionExpiryInterval, p.HasSessionExpiryInterval = g.r.Uint32(), true
		case propAssignedClientIdentifier:
			p.AssignedClientIdentifier = g.str(0)
		case propServerKeepAlive:
			p.ServerKeepAlive, p.HasServerKeepAlive = g.u16(), true
		case propAuthenticationMethod:
			p.AuthenticationMethod = g.str(1)
		case propAuthenticationData:
			p.AuthenticationData = g.bin()
		case propRequestProblemInformation:
			p.RequestProblemInformation, p.HasRequestProblemInformation = byte(g.r.IntN(2)), true
		case propWillDelayInterval:
			p.WillDelayInterval, p.HasWillDelayInterval = g.r.Uint32(), true
		case propRequestResponseInformation:
			p.RequestResponseInformation, p.HasRequestResponseInformation = byte(g.r.IntN(2)), true
		case propResponseInformation:
			p.ResponseInformation = g.str(0)
		case propServerReference:
			p.ServerReference = g.str(0)
		case propReasonString:
			p.ReasonString = g.str(0)
		case propReceiveMaximum:
			p.ReceiveMaximum, p.HasReceiveMaximum = g.nz16(), true
		case propTopicAliasMaximum:
			p.TopicAliasMaximum, p.HasTopicAliasMaximum = g.u16(), true
		case propTopicAlias:
			p.TopicAlias, p.HasTopicAlias = g.nz16(), true
		case propMaximumQoS:
			p.MaximumQoS, p.HasMaximumQoS = byte(g.r.IntN(2)), true
		case propRetainAvailable:
			p.RetainAvailable, p.HasRetainAvailable = byte(g.r.IntN(2)), true
		case propUserProperty:
			for range 1 + g.r.IntN(3) {
				p.UserProperties = append(p.UserProperties, UserProperty{g.str(0), g.str(0)})
			}
		case propMaximumPacketSize:
			p.MaximumPacketSize, p.HasMaximumPacketSize = 1+uint32(g.r.IntN(1<<31)), true
		case propWildcardSubscriptionAvailable:
			p.WildcardSubscriptionAvailable, p.HasWildcardSubscriptionAvailable = byte(g.r.IntN(2)), true
		case propSubscriptionIdentifierAvailable:
			p.SubscriptionIdentifierAvailable, p.HasSubscriptionIdentifierAvailable = byte(g.r.IntN(2)), true
		case propSharedSubscriptionAvailable:
			p.SharedSubscriptionAvailable, p.HasSharedSubscriptionAvailable = byte(g.r.IntN(2)), true
		}
	}
	if ctx == ctxConnect && p.AuthenticationMethod == "" {
		p.AuthenticationData = nil
	}
	return p
}

// codes picks 1..4 codes from a set.
func (g gen) codes(set *reasonSet) []ReasonCode {
	var all []ReasonCode
	for c := 0; c < 256; c++ {
		if set.has(ReasonCode(c)) {
			all = append(all, ReasonCode(c))
		}
	}
	cs := make([]ReasonCode, 1+g.r.IntN(4))
	for i := range cs {
		cs[i] = all[g.r.IntN(len(all))]
	}
	return cs
}

func (g gen) code(set *reasonSet) ReasonCode { return g.codes(set)[0] }

func (g gen) packet(v Version) Packet {
	v5 := v == V5
	props := func(ctx propCtx) Properties {
		if !v5 {
			return Properties{}
		}
		return g.props(ctx)
	}
	code := func(set *reasonSet) ReasonCode {
		if !v5 {
			return 0
		}
		return g.code(set)
	}
	n := 14
	if v5 {
		n = 15
	}
	switch Type(1 + g.r.IntN(n)) {
	case CONNECT:
		c := &Connect{ProtocolName: v.ProtocolName(), Version: v, CleanStart: g.maybe(), KeepAlive: g.u16(),
			ClientID: g.str(0), Properties: props(ctxConnect)}
		if g.maybe() {
			c.Will = &Will{Topic: g.str(1), Payload: g.bin(), QoS: byte(g.r.IntN(3)), Retain: g.maybe(), Properties: props(ctxWill)}
		}
		if c.UsernameFlag = g.r.IntN(2) == 0; c.UsernameFlag {
			c.Username = g.str(0)
		}
		if c.PasswordFlag = (v5 || c.UsernameFlag) && g.r.IntN(2) == 0; c.PasswordFlag {
			c.Password = g.bin()
		}
		return c
	case CONNACK:
		c := &Connack{Properties: props(ctxConnack)}
		if v5 {
			c.ReasonCode = g.code(connackCodes)
		} else {
			c.ReasonCode = ReasonCode(g.r.IntN(6))
		}
		c.SessionPresent = v != V31 && c.ReasonCode == 0 && g.maybe()
		return c
	case PUBLISH:
		p := &Publish{QoS: byte(g.r.IntN(3)), Retain: g.maybe(), Topic: g.str(1), Properties: props(ctxPublish), Payload: g.bin()}
		if p.QoS > 0 {
			p.Dup = g.maybe()
			p.PacketID = g.nz16()
		}
		if p.Properties.HasTopicAlias && g.maybe() {
			p.Topic = ""
		}
		return p
	case PUBACK:
		return &Puback{PacketID: g.nz16(), ReasonCode: code(pubackCodes), Properties: props(ctxPuback)}
	case PUBREC:
		return &Pubrec{PacketID: g.nz16(), ReasonCode: code(pubackCodes), Properties: props(ctxPuback)}
	case PUBREL:
		return &Pubrel{PacketID: g.nz16(), ReasonCode: code(pubrelCodes), Properties: props(ctxPuback)}
	case PUBCOMP:
		return &Pubcomp{PacketID: g.nz16(), ReasonCode: code(pubrelCodes), Properties: props(ctxPuback)}
	case SUBSCRIBE:
		s := &Subscribe{PacketID: g.nz16(), Properties: props(ctxSubscribe)}
		for range 1 + g.r.IntN(3) {
			sub := Subscription{Filter: g.str(0), QoS: byte(g.r.IntN(3))}
			if v5 {
				sub.NoLocal, sub.RetainAsPublished, sub.RetainHandling = g.maybe(), g.maybe(), byte(g.r.IntN(3))
			}
			s.Subscriptions = append(s.Subscriptions, sub)
		}
		return s
	case SUBACK:
		set := subackCodes3
		if v5 {
			set = subackCodes
		}
		return &Suback{PacketID: g.nz16(), Properties: props(ctxSuback), ReasonCodes: g.codes(set)}
	case UNSUBSCRIBE:
		u := &Unsubscribe{PacketID: g.nz16(), Properties: props(ctxUnsubscribe)}
		for range 1 + g.r.IntN(3) {
			u.Filters = append(u.Filters, g.str(0))
		}
		return u
	case UNSUBACK:
		u := &Unsuback{PacketID: g.nz16(), Properties: props(ctxSuback)}
		if v5 {
			u.ReasonCodes = g.codes(unsubackCodes)
		}
		return u
	case PINGREQ:
		return &Pingreq{}
	case PINGRESP:
		return &Pingresp{}
	case DISCONNECT:
		return &Disconnect{ReasonCode: code(disconnectCodes), Properties: props(ctxDisconnect)}
	default:
		return &Auth{ReasonCode: g.code(authCodes), Properties: g.props(ctxAuth)}
	}
}

func TestRoundTrip(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	for i := 0; i < 20000; i++ {
		v := []Version{V31, V311, V5}[i%3]
		p := g.packet(v)
		wire, err := Append(nil, p, v)
		if err != nil {
			t.Fatalf("Append(%+v, %s): %v", p, v, err)
		}
		if n := Size(p, v); n != len(wire) {
			t.Fatalf("Size(%+v, %s) = %d, Append wrote %d", p, v, n, len(wire))
		}
		dv := v
		if p.Type() == CONNECT {
			dv = 0
		}
		got, n, err := Decode(wire, dv)
		if err != nil {
			t.Fatalf("Decode(Append(%+v, %s)) = %v\n% x", p, v, err, wire)
		}
		if n != len(wire) || !reflect.DeepEqual(got, p) {
			t.Fatalf("round trip in %s:\n got %+v\nwant %+v\nwire % x", v, got, p, wire)
		}
	}
}

// TestAppendDropsWhatTheVersionLacks checks the documented
// normalizations: what a version cannot carry is left out, not refused.
func TestAppendDropsWhatTheVersionLacks(t *testing.T) {
	for _, c := range []struct {
		name string
		p    Packet
		v    Version
		wire string
	}{
		{"PUBLISH 3.1.1 drops properties", &Publish{Topic: "t", Properties: Properties{ReasonString: "ignored"}}, V311, "30 03 0001 74"},
		{"PUBLISH QoS 0 drops the packet identifier", &Publish{Topic: "t", PacketID: 9}, V5, "30 04 0001 74 00"},
		{"PUBACK 3.1.1 drops the reason code", &Puback{PacketID: 1, ReasonCode: NotAuthorized}, V311, "40 02 0001"},
		{"CONNACK 3.1 drops session present", &Connack{SessionPresent: true}, V31, "20 02 00 00"},
		{"SUBSCRIBE 3.1.1 drops v5 options", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", QoS: 1, NoLocal: true, RetainHandling: 2}}}, V311,
			"82 06 0001 0001 61 01"},
		{"UNSUBACK 3.1.1 drops reason codes", &Unsuback{PacketID: 1, ReasonCodes: []ReasonCode{NotAuthorized}}, V311, "b0 02 0001"},
		{"DISCONNECT 3.1.1 drops the reason code", &Disconnect{ReasonCode: DisconnectWithWill}, V311, "e0 00"},
		{"CONNECT 3.1.1 drops will properties", &Connect{ClientID: "c", Will: &Will{Topic: "t", Properties: Properties{ContentType: "x"}}}, V311,
			"10 12 0004 4d515454 04 04 0000 0001 63 0001 74 0000"},
		{"CONNECT with its own level and name", &Connect{ProtocolName: "MQIsdp", Version: 6, ClientID: "c"}, V311,
			"10 0f 0006 4d5149736470 06 00 0000 0001 63"},
		{"CONNECT version 0 takes Connect.Version", &Connect{Version: V5}, 0, "10 0d 0004 4d515454 05 00 0000 00 0000"},
	} {
		got, err := Append(nil, c.p, c.v)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if want := unhex(c.wire); !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got % x\nwant % x", c.name, got, want)
		}
	}
}
