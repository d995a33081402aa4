package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/events"
	"github.com/bifrost-mq/bifrost/mqtt/fanout"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
	"github.com/bifrost-mq/bifrost/mqtt/settings"
	"github.com/bifrost-mq/bifrost/ranges"
)

const writeTimeout = 30 * time.Second

// replyBacklog is how many encoded bytes may wait for a client's socket
// before the reader stops reading from it: a client that sends PINGREQs or
// publishes and never reads the replies grew the broker by 10 MB/s until
// the write timeout. The reader waits until the writer took the bytes (the
// client read), or the write timed out and the connection closed.
const replyBacklog = 256 << 10

// conn is one client connection and its transient session. The reader
// goroutine (serve) owns the inbound state; mu guards the outbound state,
// which deliveries from other goroutines touch.
type conn struct {
	s    *Server
	nc   net.Conn
	info listener.ConnInfo

	version   packet.Version
	id        auth.Identity
	key       sessionKey
	keepAlive time.Duration
	will      *packet.Will
	// willOnClose is cleared by a normal DISCONNECT (MQTT-3.14.4-3).
	willOnClose bool
	// clientDisconnected: the client sent DISCONNECT; kicked: the
	// connection was closed from elsewhere (kick). For the events.
	clientDisconnected, kicked bool
	kickCode                   packet.ReasonCode
	enhanced                   enhancedAuth
	// noProblemInfo: the 5.0 client set Request Problem Information to 0;
	// acknowledgements carry no reason string (MQTT-3.1.2-29).
	noProblemInfo bool
	// linger: the close shuts the write side first and reads what the
	// client still sends (a refused CONNECT, a protocol error), so that
	// the client reads the reason code (lingerClose).
	linger        bool
	connectExpiry uint32
	// sess is the persistent session (nil: transient), set at CONNECT.
	sess *session
	// willRec is a clean session's will in the inbox (holdWill).
	willRec *willRecord
	// disconnectExpiry is the session expiry an MQTT 5 DISCONNECT set.
	disconnectExpiry *uint32
	// stamp orders the connections of one client ID cluster-wide; a
	// CONNECT in progress is superseded by a newer one's claim (claim.go).
	stamp      int64
	superseded atomic.Bool
	// claimState: claimWaiting, claimWaited or claimRefused (claim.go).
	claimState atomic.Int32

	// Inbound state, reader goroutine only. The maps are made at their
	// first entry (connmem.go).
	aliasesIn   map[uint16]string
	awaitingRel map[uint16]struct{} // QoS 2 packet IDs before PUBREL
	// subs is the connection's subscriptions by filter as written. The
	// reader changes them, and an operator's call (operate.go) on another
	// goroutine; subsMu serialises the two, each change whole (inbox
	// record, route, subs). subsEnded: the connection ended, subs are
	// no longer served.
	subsMu    sync.Mutex
	subs      map[string]dist.Subscription
	subsEnded bool
	// pubs is the publishes whose acknowledgements are not sent yet
	// (publish.go).
	pubs pubPipeline

	mu      sync.Mutex
	out     []byte
	spare   []byte
	writing bool
	// writingBytes is the size of the buffer the writer is writing;
	// queuedBytes the messages in queue (budget.go).
	writingBytes, queuedBytes int
	// onRoom wakes a persistent session that waits for the connection to
	// hold less than its byte budget (budget.go).
	onRoom func()
	// taken is closed (and dropped) when the writer takes out, for a
	// reader waiting for the backlog to drain (waitBacklog).
	taken    chan struct{}
	closed   bool
	writerWG sync.WaitGroup
	// Outbound session state.
	nextID      uint16
	inflight    map[uint16]*outMessage
	queue       []*outMessage
	window      int
	maxOut      uint32 // the client's maximum packet size; 0: none
	aliasOutMax uint16
	aliasesOut  map[string]uint16
	// room is closed (and dropped) when the outbound side frees room: the
	// writer took bytes, an acknowledgement freed the window, or the
	// connection closed; for the retained feed waiting for it.
	room chan struct{}
	// feed is the retained messages of new subscriptions, still to be
	// sent (retained.go).
	feed retainedFeed

	done chan struct{}

	// set is the tenant's settings as of CONNECT; usage what the
	// connection counts in its tenant's (quota.go), released by finish;
	// pubRate bounds its PUBLISH packets (nil: no limit); readCharged is
	// the bytes read already charged to the tenant's inbound bandwidth,
	// charged by inboundChunk.
	set            settings.Settings
	usage          *tenantUsage
	countedSession bool
	pubRate        *bucket
	readCharged    int64
	inboundChunk   int64

	// idle is the reader's state between packets, and what lets an idle
	// connection wait without a goroutine (idle.go).
	idle idleConn
}

// outMessage is a message on its way to the client.
type outMessage struct {
	m      *mqttpb.Message
	qos    byte
	retain bool
	subIDs []uint32
	// released is set once PUBREC came back for a QoS 2 message.
	released bool
	// inbox: a persistent session's message, seq in its inbox queue.
	inbox bool
	seq   uint64
}

func newConn(s *Server, nc net.Conn, info listener.ConnInfo) *conn {
	return &conn{s: s, nc: nc, info: info, done: make(chan struct{})}
}

// errClose ends a connection without a DISCONNECT (MQTT 3.x, or the packet
// already sent).
var errClose = errors.New("close")

// disconnectError ends an MQTT 5 connection with a server DISCONNECT.
type disconnectError struct {
	code   packet.ReasonCode
	reason string
}

func (e *disconnectError) Error() string { return fmt.Sprintf("%s: %s", e.code, e.reason) }

func (c *conn) protocolError(format string, args ...any) error {
	return &disconnectError{code: packet.ProtocolError, reason: fmt.Sprintf(format, args...)}
}

// serve reads the CONNECT, then packets until the connection ends or
// parks (readOn).
func (c *conn) serve() {
	lr := newLazyReader(c.nc)
	r := packet.NewReader(lr, c.s.cfg.MaxPacketSize)
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.ConnectTimeout))
	p, err := r.ReadPacket(0)
	if err != nil {
		c.refuseBadConnect(err)
		c.finish()
		return
	}
	c.s.m.packetsIn.WithLabelValues("CONNECT").Inc()
	connect := p.(*packet.Connect)
	c.enhanced.r = r
	if !c.connect(connect) {
		c.linger = true
		c.flushAndClose()
		c.finish()
		return
	}
	c.s.m.connections.Inc()
	c.emit(events.Connect, "", 0, "")
	c.idle.r, c.idle.lr = r, lr
	c.readOn()
}

// refuseBadConnect answers a CONNECT that did not decode: with the CONNACK
// the spec names where the version is known (MQTT-3.1.2-2, MQTT-3.2.2-5),
// else by closing.
func (c *conn) refuseBadConnect(err error) {
	var pe *packet.Error
	if !errors.As(err, &pe) {
		return // EOF, timeout, reset
	}
	c.s.m.connects.WithLabelValues("malformed").Inc()
	if pe.Type != packet.CONNECT && pe.Type != 0 {
		return // MQTT-3.1.0-1: the first packet must be CONNECT
	}
	switch {
	case pe.Code == packet.UnsupportedProtocolVersion && pe.Version != packet.V5:
		c.version = packet.V311
		c.send(&packet.Connack{ReasonCode: packet.ConnRefusedProtocolVersion})
	case pe.Version == packet.V5:
		c.version = packet.V5
		c.send(&packet.Connack{ReasonCode: pe.Code})
	}
	c.linger = true
	c.flushAndClose()
}

// connect handles CONNECT and answers CONNACK; false means refused.
func (c *conn) connect(p *packet.Connect) bool {
	c.version = p.Version
	v5 := c.version == packet.V5
	refuse := func(v5code, v3code packet.ReasonCode, result string) bool {
		c.s.m.connects.WithLabelValues(result).Inc()
		if v5 {
			c.send(&packet.Connack{ReasonCode: v5code})
		} else {
			c.send(&packet.Connack{ReasonCode: v3code})
		}
		return false
	}
	clientID := p.ClientID
	assigned := false
	if clientID == "" {
		switch {
		case c.version == packet.V31:
			return refuse(0, packet.ConnRefusedIdentifierRejected, "bad_client_id")
		case c.version == packet.V311 && !p.CleanStart:
			return refuse(0, packet.ConnRefusedIdentifierRejected, "bad_client_id") // MQTT-3.1.3-8
		}
		clientID = "auto-" + NewReceiverID("")[4:] // MQTT-3.1.3-6
		assigned = true
	}
	if c.version == packet.V31 && len(clientID) > 23 {
		return refuse(0, packet.ConnRefusedIdentifierRejected, "bad_client_id")
	}
	if len(clientID) > 1024 {
		return refuse(packet.ClientIdentifierNotValid, packet.ConnRefusedIdentifierRejected, "bad_client_id")
	}
	if p.Will != nil {
		rt := p.Will.Properties.ResponseTopic
		if err := dist.ValidateTopicName(p.Will.Topic); err != nil || (v5 && rt != "" && dist.ValidateTopicName(rt) != nil) {
			if !v5 {
				// 3.x has no CONNACK code for it: a protocol violation
				// closes the connection (MQTT-4.8.0-1).
				c.s.m.connects.WithLabelValues("bad_will").Inc()
				return false
			}
			return refuse(packet.TopicNameInvalid, 0, "bad_will")
		}
	}
	creds := auth.Credentials{
		ClientID: clientID, Username: p.Username, HasUsername: p.UsernameFlag,
		Password: p.Password, HasPassword: p.PasswordFlag, Remote: c.nc.RemoteAddr(),
		ProtocolVersion: byte(c.version), ListenerTenant: c.info.Tenant,
	}
	if c.info.TLS != nil && len(c.info.TLS.PeerCertificates) > 0 {
		creds.Certificate = c.info.TLS.PeerCertificates[0]
		creds.CommonName = creds.Certificate.Subject.CommonName
		creds.CertSubject = creds.Certificate.Subject.String()
	}
	var id auth.Identity
	var authData []byte
	var err error
	if v5 && p.Properties.AuthenticationMethod != "" {
		id, authData, err = c.connectEnhanced(p.Properties.AuthenticationMethod, p.Properties.AuthenticationData, creds)
	} else {
		ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.RequestTimeout)
		id, err = c.s.cfg.Auth.Authenticate(ctx, creds)
		cancel()
	}
	switch {
	case errors.Is(err, auth.ErrBadAuthMethod):
		return refuse(packet.BadAuthenticationMethod, 0, "bad_auth_method") // MQTT-4.12.0-1
	case errors.Is(err, errAuthProtocol):
		return refuse(packet.ProtocolError, 0, "bad_auth")
	case errors.Is(err, auth.ErrBadCredentials):
		return refuse(packet.BadUserNameOrPassword, packet.ConnRefusedBadUsernamePassword, "bad_credentials")
	case err != nil:
		return refuse(packet.NotAuthorized, packet.ConnRefusedNotAuthorized, "not_authorized")
	}
	if id.Tenant == "" {
		id.Tenant = creds.FallbackTenant()
	}
	id.Remote = creds.Remote
	if err := auth.ValidateTenant(id.Tenant); err != nil {
		// An authenticator's bug or a webhook's bad answer: the tenant
		// prefixes every key this client touches, so no guessing.
		c.s.log.Warn("mqtt: authenticator gave a bad tenant; connection refused", "client", clientID, "remote", creds.Remote, "err", err)
		return refuse(packet.NotAuthorized, packet.ConnRefusedNotAuthorized, "bad_tenant")
	}
	if p.Will != nil && (reservedTopic(p.Will.Topic) || !auth.Allowed(c.s.ctx, c.s.cfg.Auth, id, auth.Request{Action: auth.Publish, Topic: p.Will.Topic, QoS: p.Will.QoS, Retain: p.Will.Retain})) {
		return refuse(packet.NotAuthorized, packet.ConnRefusedNotAuthorized, "will_not_authorized")
	}
	c.id = id
	c.set = c.s.settingsOf(c.s.ctx, id.Tenant)
	if p.Will != nil && (p.Will.QoS > c.set.MaxQoS || topicOverQuota(&c.set, p.Will.Topic) != "") {
		setting := topicOverQuota(&c.set, p.Will.Topic)
		if setting == "" {
			setting = "max-qos"
		}
		c.overQuota(setting, p.Will.Topic)
		if p.Will.QoS > c.set.MaxQoS {
			return refuse(packet.QoSNotSupported, packet.ConnRefusedServerUnavailable, "quota_exceeded") // MQTT-3.2.2-12
		}
		return refuse(packet.QuotaExceeded, packet.ConnRefusedServerUnavailable, "quota_exceeded")
	}
	persistent := (v5 && p.Properties.SessionExpiryInterval > 0) || (!v5 && !p.CleanStart)
	if setting := c.admit(persistent && c.s.cfg.Inbox != nil); setting != "" {
		c.overQuota(setting, "")
		if setting == "connect-rate" {
			return refuse(packet.ConnectionRateExceeded, packet.ConnRefusedServerUnavailable, "quota_exceeded")
		}
		return refuse(packet.QuotaExceeded, packet.ConnRefusedServerUnavailable, "quota_exceeded")
	}
	c.key = sessionKey{id.Tenant, clientID}
	c.will = p.Will
	c.willOnClose = p.Will != nil
	c.connectExpiry = p.Properties.SessionExpiryInterval

	ka := p.KeepAlive
	if max := c.s.cfg.MaxKeepAlive; !v5 && max > 0 && (ka == 0 || ka > max) {
		// A 3.x client cannot be told a keep-alive, and one with none (or
		// a longer one) would hold its connection (and a half-sent packet)
		// past the cap: refused, as mosquitto refuses it (identifier
		// rejected is the only 3.x code that fits).
		return refuse(packet.ConnRefusedIdentifierRejected, packet.ConnRefusedIdentifierRejected, "keepalive_over_max")
	}
	var ack packet.Connack
	if v5 {
		if max := c.s.cfg.MaxKeepAlive; max > 0 && (ka == 0 || ka > max) {
			ka = max
			ack.Properties.ServerKeepAlive, ack.Properties.HasServerKeepAlive = ka, true
		}
		if assigned {
			ack.Properties.AssignedClientIdentifier = clientID
		}
		if p.Properties.RequestResponseInformation == 1 {
			// The base of the client's response topics (MQTT 5 4.10.2);
			// never without the request (MQTT-3.1.2-28).
			ack.Properties.ResponseInformation = "response/" + clientID + "/"
		}
		ack.Properties.ReceiveMaximum, ack.Properties.HasReceiveMaximum = c.s.cfg.ReceiveMaximum, true
		ack.Properties.AuthenticationMethod, ack.Properties.AuthenticationData = c.enhanced.method, authData
		ack.Properties.MaximumPacketSize, ack.Properties.HasMaximumPacketSize = c.s.cfg.MaxPacketSize, true
		if c.s.cfg.TopicAliasMaximum > 0 {
			ack.Properties.TopicAliasMaximum, ack.Properties.HasTopicAliasMaximum = c.s.cfg.TopicAliasMaximum, true
		}
		if c.set.MaxQoS < 2 {
			ack.Properties.MaximumQoS, ack.Properties.HasMaximumQoS = c.set.MaxQoS, true // MQTT-3.2.2-9
		}
	}
	c.keepAlive = time.Duration(ka) * time.Second
	c.noProblemInfo = v5 && p.Properties.HasRequestProblemInformation && p.Properties.RequestProblemInformation == 0

	c.window = int(c.s.cfg.MaxInflight)
	if v5 && p.Properties.HasReceiveMaximum && int(p.Properties.ReceiveMaximum) < c.window {
		c.window = int(p.Properties.ReceiveMaximum) // MQTT-3.3.4-7
	}
	if v5 && p.Properties.HasMaximumPacketSize {
		c.maxOut = p.Properties.MaximumPacketSize
	}
	if v5 && p.Properties.HasTopicAliasMaximum {
		c.aliasOutMax = p.Properties.TopicAliasMaximum
	}
	c.inflight = map[uint16]*outMessage{}

	// The client ID's older connections on other frontends close first
	// (claim.go), then its session is opened.
	// A client ID in use by another user, here, on another frontend or
	// as a session in the inbox, is refused (claim.go).
	if !c.s.beginConnect(c) {
		return refuse(packet.NotAuthorized, packet.ConnRefusedNotAuthorized, "client_id_of_another_user")
	}
	claimed := c.s.claim(c.s.ctx, c)
	var present bool
	if claimed {
		present, err = c.openSessionAside(p, &ack)
	}
	if !claimed || err != nil {
		c.s.mu.Lock()
		c.s.endConnectLocked(c)
		c.s.mu.Unlock()
		if !claimed || errors.Is(err, errForeignSession) {
			return refuse(packet.NotAuthorized, packet.ConnRefusedNotAuthorized, "client_id_of_another_user")
		}
		c.s.log.Warn("opening a persistent session failed", "tenant", id.Tenant, "client", clientID, "err", err)
		return refuse(packet.ServerUnavailable, packet.ConnRefusedServerUnavailable, "session_unavailable")
	}
	ack.SessionPresent = present // MQTT-3.2.2-2, MQTT-3.2.2-3
	live := c.s.register(c)
	c.s.m.connects.WithLabelValues("accepted").Inc()
	c.send(&ack)
	if c.sess != nil {
		c.sess.start()
	}
	if !live {
		// A newer connection of the client ID was accepted elsewhere
		// while this one connected: it has the session.
		c.kick(packet.SessionTakenOver)
	}
	return true
}

func (c *conn) readLoop(r *packet.Reader) error {
	for {
		c.waitBacklog()
		// Sets the keep-alive deadline; true: parked (idle.go).
		if c.awaitPacket() {
			return errParked
		}
		c.armPacketDeadline()
		p, err := r.ReadPacket(c.version)
		if err != nil {
			var pe *packet.Error
			if errors.As(err, &pe) {
				return &disconnectError{code: pe.Code, reason: pe.Msg}
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && c.keepAlive > 0 {
				return &disconnectError{code: packet.KeepAliveTimeout, reason: "keep alive timeout"}
			}
			return err
		}
		c.s.m.packetsIn.WithLabelValues(p.Type().String()).Inc()
		if err := c.handle(p); err != nil {
			return err
		}
		c.throttleInbound()
	}
}

func (c *conn) handle(p packet.Packet) error {
	switch p := p.(type) {
	case *packet.Publish:
		return c.onPublish(p)
	case *packet.Puback:
		c.onAck(p.PacketID, packet.PUBACK, p.ReasonCode)
	case *packet.Pubrec:
		c.onAck(p.PacketID, packet.PUBREC, p.ReasonCode)
	case *packet.Pubcomp:
		c.onAck(p.PacketID, packet.PUBCOMP, p.ReasonCode)
	case *packet.Pubrel:
		code := packet.Success
		_, held := c.awaitingRel[p.PacketID]
		if held {
			delete(c.awaitingRel, p.PacketID)
		} else if c.version == packet.V5 {
			code = packet.PacketIdentifierNotFound
		}
		if held && c.sess != nil {
			// Out of the session's record before the PUBCOMP frees the
			// ID for a new message (qos2.go); if that fails, the
			// connection closes and its detach writes the set.
			id := p.PacketID
			c.sess.recordRel(id, relRemove, func(_ *inboxpb.RelKey, err error) {
				if err != nil {
					c.s.log.Warn("releasing a QoS 2 packet ID failed", "tenant", c.id.Tenant, "client", c.key.clientID, "err", err)
					go c.kick(packet.UnspecifiedError)
					return
				}
				c.send(&packet.Pubcomp{PacketID: id})
			})
			return nil
		}
		c.send(&packet.Pubcomp{PacketID: p.PacketID, ReasonCode: code})
	case *packet.Subscribe:
		return c.onSubscribe(p)
	case *packet.Unsubscribe:
		c.onUnsubscribe(p)
	case *packet.Pingreq:
		c.send(&packet.Pingresp{})
	case *packet.Disconnect:
		if p.Properties.HasSessionExpiryInterval && p.Properties.SessionExpiryInterval > 0 && c.connectExpiry == 0 {
			return c.protocolError("MQTT-3.14.2-2: session expiry set on DISCONNECT after 0 on CONNECT")
		}
		if p.Properties.HasSessionExpiryInterval {
			e := p.Properties.SessionExpiryInterval
			if max := c.maxSessionExpiry(); max > 0 && e > max {
				e = max
			}
			c.disconnectExpiry = &e
		}
		c.willOnClose = p.ReasonCode == packet.DisconnectWithWill
		c.clientDisconnected = true
		return io.EOF
	case *packet.Auth:
		return c.onAuth(p)
	case *packet.Connect:
		return c.protocolError("MQTT-3.1.0-2: a second CONNECT")
	default:
		return c.protocolError("%s is not sent by clients", p.Type())
	}
	return nil
}

// messageOf builds the message that travels from a PUBLISH.
func messageOf(topic string, p *packet.Publish, publisher string, now time.Time) *mqttpb.Message {
	m := &mqttpb.Message{
		Topic: topic, Payload: p.Payload, Qos: uint32(p.QoS), Retain: p.Retain, Publisher: publisher,
		ContentType: p.Properties.ContentType, ResponseTopic: p.Properties.ResponseTopic,
		CorrelationData: p.Properties.CorrelationData,
	}
	if p.Properties.HasPayloadFormatIndicator {
		m.HasPayloadFormat, m.PayloadFormat = true, uint32(p.Properties.PayloadFormatIndicator)
	}
	if p.Properties.HasMessageExpiryInterval {
		m.ExpiresUnixMs = now.Add(time.Duration(p.Properties.MessageExpiryInterval) * time.Second).UnixMilli()
	}
	for _, up := range p.Properties.UserProperties {
		m.UserProperties = append(m.UserProperties, &mqttpb.UserProperty{Key: up.Key, Value: up.Value})
	}
	return m
}

// retain stores (or, for an empty payload, deletes: MQTT-3.3.1-6) the
// topic's retained message. An error is a *retainRefusedError when the
// store answered and refused it.
func (s *Server) retain(ctx context.Context, tenant string, m *mqttpb.Message) error {
	props, err := proto.Marshal(&mqttpb.Message{
		HasPayloadFormat: m.HasPayloadFormat, PayloadFormat: m.PayloadFormat, ContentType: m.ContentType,
		ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData, UserProperties: m.UserProperties,
		Publisher: m.Publisher,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.cfg.Retain.Set(ctx, &retainpb.SetRequest{Tenant: tenant, MaxPerTenant: s.limitsOf(tenant).MaxRetained, Message: &retainpb.Message{
		Topic: m.Topic, Payload: m.Payload, Qos: m.Qos, Properties: props,
		ExpiresUnixMs: m.ExpiresUnixMs, PublishedUnixMs: time.Now().UnixMilli(),
	}})
	if errors.Is(err, ranges.ErrBadRequest) {
		return &retainRefusedError{result: retainpb.Result_RESULT_INVALID, reason: err.Error()}
	}
	if err != nil {
		return err
	}
	if resp.Result != retainpb.Result_RESULT_OK && resp.Result != retainpb.Result_RESULT_DELETED {
		return &retainRefusedError{result: resp.Result, reason: resp.Reason}
	}
	return nil
}

// retainRefusedError is a retained message the store refused: over the
// tenant's limit, or one it cannot take. Sent again, it would be refused
// again.
type retainRefusedError struct {
	result retainpb.Result
	reason string
}

func (e *retainRefusedError) Error() string {
	return fmt.Sprintf("retain refused: %s %s", e.result, e.reason)
}

// code is the reason code that tells a 5.0 client.
func (e *retainRefusedError) code() packet.ReasonCode {
	if e.result == retainpb.Result_RESULT_LIMIT {
		return packet.QuotaExceeded
	}
	return packet.ImplementationSpecificError
}

// clipped is a topic or filter in a log line: a longer one than 128 bytes
// is cut there and its length given, so that a client's 64 KiB topics do
// not fill the log.
type clipped string

func (s clipped) LogValue() slog.Value {
	const keep = 128
	if len(s) <= keep {
		return slog.StringValue(string(s))
	}
	return slog.StringValue(fmt.Sprintf("%s... (%d bytes)", strings.ToValidUTF8(string(s[:keep]), ""), len(s)))
}

func (c *conn) onSubscribe(p *packet.Subscribe) error {
	v5 := c.version == packet.V5
	var subID uint32
	if len(p.Properties.SubscriptionIdentifier) > 0 {
		subID = p.Properties.SubscriptionIdentifier[0]
	}
	codes := make([]packet.ReasonCode, len(p.Subscriptions))
	var retained []*retainedReq
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	for i, sub := range p.Subscriptions {
		parsed, err := dist.ParseSubscription(sub.Filter)
		if err != nil {
			codes[i] = failCode(v5, packet.TopicFilterInvalid)
			continue
		}
		if parsed.Group != "" && sub.NoLocal && v5 {
			return c.protocolError("MQTT-3.8.3-4: no local on a shared subscription")
		}
		if !auth.Allowed(c.s.ctx, c.s.cfg.Auth, c.id, auth.Request{Action: auth.Subscribe, Topic: sub.Filter, QoS: sub.QoS}) {
			codes[i] = failCode(v5, packet.NotAuthorized)
			c.emit(events.SubscribeDenied, sub.Filter, sub.QoS, "not_authorized")
			continue
		}
		_, existed := c.subs[sub.Filter]
		setting := topicOverQuota(&c.set, sub.Filter)
		if setting == "" && !existed && c.set.MaxSubscriptions > 0 && len(c.subs) >= c.set.MaxSubscriptions {
			setting = "max-subscriptions"
		}
		if setting != "" {
			codes[i] = failCode(v5, packet.QuotaExceeded)
			c.overQuota(setting, sub.Filter)
			continue
		}
		qos := min(sub.QoS, 2, c.set.MaxQoS) // MQTT-3.2.2-9: granted at most the maximum
		opts := fanout.Options{
			QoS: qos, NoLocal: sub.NoLocal && v5, RetainAsPublished: sub.RetainAsPublished && v5, SubscriptionID: subID,
		}
		res, err := c.subscribeLocked(sub.Filter, parsed, opts)
		if err != nil {
			c.s.log.Warn("subscribe failed", "tenant", c.id.Tenant, "client", c.key.clientID, "filter", clipped(sub.Filter), "err", err)
			code := packet.UnspecifiedError
			if res == distpb.Result_RESULT_LIMIT {
				code = packet.QuotaExceeded
				c.overQuota("max-routes", sub.Filter)
			}
			codes[i] = failCode(v5, code)
			continue
		}
		codes[i] = packet.ReasonCode(qos) // granted QoS: MQTT-3.9.3-1
		if wantsRetained(parsed, sub.RetainHandling, existed) {
			retained = append(retained, &retainedReq{filter: sub.Filter, qos: qos, subID: subID})
		}
	}
	c.send(&packet.Suback{PacketID: p.PacketID, ReasonCodes: codes}) // MQTT-3.8.4-1
	c.sendRetainedNow(retained)
	return nil
}

// wantsRetained: a new or renewed subscription is sent the retained
// messages by its retain handling (MQTT-3.3.1-9..11); a shared one none
// (MQTT-4.8.2 note).
func wantsRetained(sub dist.Subscription, retainHandling byte, existed bool) bool {
	return sub.Group == "" && (retainHandling == 0 || (retainHandling == 1 && !existed))
}

// subscribeLocked adds or renews a subscription as SUBSCRIBE does: the
// session's inbox record and route (a persistent session) or the
// frontend's route (a clean one), then subs. c.subsMu is held.
func (c *conn) subscribeLocked(filter string, parsed dist.Subscription, opts fanout.Options) (distpb.Result, error) {
	var res distpb.Result
	var err error
	if c.sess != nil {
		res, err = c.sess.subscribe(parsed, opts)
	} else {
		res, err = c.s.subscribe(c.s.ctx, c.id.Tenant, c.key.clientID, parsed, opts)
	}
	if err != nil {
		return res, err
	}
	if _, existed := c.subs[filter]; !existed {
		c.s.m.subscriptions.Inc()
	}
	c.addSub(filter, parsed)
	return res, nil
}

// unsubscribeLocked removes a subscription as UNSUBSCRIBE does; false
// when there was none. c.subsMu is held.
func (c *conn) unsubscribeLocked(filter string) bool {
	sub, ok := c.subs[filter]
	if !ok {
		return false
	}
	if c.sess != nil {
		c.sess.unsubscribe(sub)
	} else {
		c.s.unsubscribe(c.s.ctx, c.id.Tenant, c.key.clientID, sub)
	}
	delete(c.subs, filter)
	c.stopRetained(filter) // MQTT-3.10.4-2: no new messages for it
	c.s.m.subscriptions.Dec()
	return true
}

func failCode(v5 bool, code packet.ReasonCode) packet.ReasonCode {
	if v5 {
		return code
	}
	return packet.SubackFailure
}

func (c *conn) onUnsubscribe(p *packet.Unsubscribe) {
	codes := make([]packet.ReasonCode, len(p.Filters))
	c.subsMu.Lock()
	for i, f := range p.Filters {
		if !c.unsubscribeLocked(f) {
			codes[i] = packet.NoSubscriptionExisted
			if _, err := dist.ParseSubscription(f); err != nil {
				codes[i] = packet.TopicFilterInvalid
			}
			continue
		}
		codes[i] = packet.Success
	}
	c.subsMu.Unlock()
	c.send(&packet.Unsuback{PacketID: p.PacketID, ReasonCodes: codes}) // MQTT-3.10.4-4
}

// end tears the session down after the read loop stopped.
func (c *conn) end(err error) {
	// The publishes already read are handed on (a QoS 0 message before a
	// DISCONNECT is still delivered) before the session goes.
	c.pubs.drain(c.s.cfg.InsertTimeout + time.Second)
	for _, id := range c.pubs.takeRelUndo() {
		delete(c.awaitingRel, id)
	}
	var de *disconnectError
	if errors.As(err, &de) {
		if c.version == packet.V5 {
			d := &packet.Disconnect{ReasonCode: de.code}
			d.Properties.ReasonString = de.reason
			c.send(d)
		}
		c.linger = true
	}
	c.flushAndClose()
	c.stopFeed()
	if c.sess == nil {
		c.s.unregister(c)
	}
	// MQTT-3.1.2-8: the will goes out unless the client said a normal
	// DISCONNECT; that includes a takeover and a server shutdown. A will
	// kept in the inbox (a persistent session's, or a clean session's will
	// record) is the inbox's to send, after its delay (MQTT-3.1.3-9) or
	// now: its scheduler publishes it once, and it survives this frontend.
	sendWill := c.willOnClose && c.will != nil
	switch {
	case c.willRec != nil:
		c.endWill() // a clean session's will, kept in the inbox
	case c.sess == nil && sendWill:
		c.publishWill()
	}
	// An operator's change after this point finds the connection ended.
	c.subsMu.Lock()
	c.subsEnded = true
	if c.sess != nil {
		// The subscriptions and unacknowledged messages stay in the inbox.
		if c.sess.close(sendWill, c.disconnectExpiry) && c.will.Properties.WillDelayInterval == 0 {
			// Taken over: the inbox has the new connection's will. A
			// delayed will is cancelled by the resume (MQTT-3.1.3-9), or
			// was made due by a clean start's attach.
			c.publishWill()
		}
		c.s.m.subscriptions.Sub(float64(len(c.subs)))
		c.subs = nil
		// Registered until detached: a new connection of the client here
		// waits for it (openSession).
		c.s.unregister(c)
	}
	for f, sub := range c.subs {
		c.s.unsubscribe(context.Background(), c.id.Tenant, c.key.clientID, sub)
		delete(c.subs, f)
		c.s.m.subscriptions.Dec()
	}
	c.subsMu.Unlock()
	c.mu.Lock()
	dropped := len(c.queue)
	for _, om := range c.inflight {
		if !om.inbox {
			dropped++
		}
	}
	c.inflight, c.queue, c.queuedBytes = nil, nil, 0
	c.mu.Unlock()
	if dropped > 0 {
		c.drop("", "session_ended", dropped)
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, errClose) && !errors.Is(err, net.ErrClosed) {
		c.s.log.Debug("connection ended", "tenant", c.id.Tenant, "client", c.key.clientID, "remote", c.nc.RemoteAddr(), "err", err)
	}
}

func (c *conn) publishWill() {
	w := c.will
	m := messageOf(w.Topic, &packet.Publish{QoS: w.QoS, Retain: w.Retain, Payload: w.Payload, Properties: w.Properties}, c.key.clientID, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), c.s.cfg.RequestTimeout)
	defer cancel()
	if w.Retain {
		if err := c.s.retain(ctx, c.id.Tenant, m); err != nil {
			c.s.log.Warn("retaining a will failed", "tenant", c.id.Tenant, "client", c.key.clientID, "err", err)
		}
	}
	if _, err := c.s.dispatch(ctx, c.id.Tenant, m); err != nil {
		c.s.log.Warn("publishing a will failed", "tenant", c.id.Tenant, "client", c.key.clientID, "err", err)
		return
	}
	c.s.willPublished(c.id.Tenant, c.key.clientID, w.Topic, w.QoS)
}

// kick ends the connection from another goroutine: takeover or shutdown.
func (c *conn) kick(code packet.ReasonCode) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if c.version == packet.V5 {
		c.enqueueLocked(&packet.Disconnect{ReasonCode: code}) // MQTT-3.1.4-3
	}
	c.kicked, c.kickCode = true, code
	c.mu.Unlock()
	c.flushAndClose()
}

// flushAndClose writes what is queued (briefly) and closes the socket.
func (c *conn) flushAndClose() {
	c.mu.Lock()
	c.closed = true
	c.releaseBacklogLocked()
	c.mu.Unlock()
	c.pubs.close() // a reader waiting for room in the pipeline
	done := make(chan struct{})
	go func() { c.writerWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	c.mu.Lock()
	rest := c.out
	c.out = nil
	c.mu.Unlock()
	if len(rest) > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.nc.Write(rest)
	}
	if c.linger {
		lingerClose(c.nc)
	}
	c.nc.Close()
	c.writerWG.Wait()
	c.wake() // a parked reader, to see the close
}

// closeLinger bounds how long a connection closed for a protocol error or
// a refused CONNECT reads what the client still sends, after its write
// side is shut, so that the close does not reset the connection before the
// client read the server's last packet (CONNACK or DISCONNECT with the
// reason code).
const closeLinger = 2 * time.Second

// lingerClose shuts the write side of nc and discards what the client
// sends until it closes or closeLinger passes (at most 1 MiB).
func lingerClose(nc net.Conn) {
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = nc.SetReadDeadline(time.Now().Add(closeLinger))
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
}

// problemInfo is the properties of an acknowledgement, CONNACK or
// DISCONNECT when they carry a reason string or user properties (what the
// client's maximum packet size may have to drop); nil otherwise.
func problemInfo(p packet.Packet) *packet.Properties {
	var pr *packet.Properties
	switch p := p.(type) {
	case *packet.Puback:
		pr = &p.Properties
	case *packet.Pubrec:
		pr = &p.Properties
	case *packet.Pubrel:
		pr = &p.Properties
	case *packet.Pubcomp:
		pr = &p.Properties
	case *packet.Suback:
		pr = &p.Properties
	case *packet.Unsuback:
		pr = &p.Properties
	case *packet.Disconnect:
		pr = &p.Properties
	case *packet.Connack:
		pr = &p.Properties
	default:
		return nil
	}
	if pr.ReasonString == "" && len(pr.UserProperties) == 0 {
		return nil
	}
	return pr
}

// send queues a control packet.
func (c *conn) send(p packet.Packet) {
	c.mu.Lock()
	c.enqueueLocked(p)
	c.mu.Unlock()
}

func (c *conn) enqueueLocked(p packet.Packet) bool {
	if c.closed && p.Type() != packet.DISCONNECT && p.Type() != packet.CONNACK {
		return false
	}
	if c.maxOut > 0 {
		// A reason string and user properties are left out rather than
		// the packet exceed the client's maximum (MQTT-3.1.2-25, e.g.
		// MQTT-3.4.2-2); a packet without them is not measured.
		if pr := problemInfo(p); pr != nil && uint32(packet.Size(p, c.version)) > c.maxOut {
			pr.ReasonString, pr.UserProperties = "", nil
		}
	}
	b, err := packet.Append(c.out, p, c.version)
	if err != nil {
		c.s.log.Error("encoding a packet failed", "type", p.Type().String(), "err", err)
		return false
	}
	c.out = b
	if !c.writing && !c.closed {
		c.writing = true
		c.writerWG.Add(1)
		go c.writeLoop()
	}
	return true
}

// writeLoop writes what is queued until the queue is empty: a writer runs
// only while there is something to write, so an idle connection costs one
// goroutine (its reader), and a burst goes out in few system calls.
// armPacketDeadline bounds the time from a packet's first byte to its
// last by the packet timeout, where the keep-alive does not bound it
// sooner: a client without a keep-alive that sent half a packet held its
// connection (and the buffers) forever.
func (c *conn) armPacketDeadline() {
	lr := c.idle.lr
	if lr == nil {
		return
	}
	if c.keepAlive > 0 && c.keepAlive*3/2 <= c.s.cfg.PacketTimeout {
		return
	}
	if lr.started == nil {
		lr.started = func() { _ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.PacketTimeout)) }
	}
	lr.armed = true
}

// waitBacklog waits while more than replyBacklog bytes wait for the
// client's socket: until the writer takes them, or the connection closes.
func (c *conn) waitBacklog() {
	for {
		c.mu.Lock()
		if len(c.out) <= replyBacklog || c.closed {
			c.mu.Unlock()
			return
		}
		if c.taken == nil {
			c.taken = make(chan struct{})
		}
		ch := c.taken
		c.mu.Unlock()
		c.s.m.readerPauses.Inc()
		<-ch
	}
}

func (c *conn) releaseBacklogLocked() {
	if c.taken != nil {
		close(c.taken)
		c.taken = nil
	}
	c.roomFreedLocked()
}

// roomFreedLocked wakes whoever waits for room (roomChanLocked).
func (c *conn) roomFreedLocked() {
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
}

// roomChanLocked returns a channel closed once the outbound side frees
// room (a window slot, socket backlog, budget).
func (c *conn) roomChanLocked() <-chan struct{} {
	if c.room == nil {
		c.room = make(chan struct{})
	}
	return c.room
}

func (c *conn) writeLoop() {
	defer c.writerWG.Done()
	for {
		c.mu.Lock()
		if len(c.out) == 0 || c.closed {
			c.writing = false
			c.mu.Unlock()
			return
		}
		buf := c.out
		c.out = c.spare[:0]
		c.spare = nil
		c.writingBytes = len(buf)
		c.releaseBacklogLocked()
		c.mu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		c.writingBytes = 0
		if cap(buf) <= 64<<10 {
			c.spare = buf[:0]
		}
		if err != nil {
			c.closed = true
			c.releaseBacklogLocked()
			c.writing = false
			c.out = nil
			c.mu.Unlock()
			c.nc.Close()
			c.wake() // a parked reader, to see the close
			return
		}
		wake := c.roomMadeLocked()
		c.roomFreedLocked()
		c.mu.Unlock()
		if wake != nil {
			wake()
		}
	}
}

// deliver hands a message to the client at qos; false if it was dropped.
func (c *conn) deliver(m *mqttpb.Message, qos byte, retain bool, subIDs []uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deliverLocked(m, qos, retain, subIDs)
}

func (c *conn) deliverLocked(m *mqttpb.Message, qos byte, retain bool, subIDs []uint32) bool {
	if c.closed || c.inflight == nil {
		return false
	}
	if m.ExpiresUnixMs != 0 && time.Now().UnixMilli() >= m.ExpiresUnixMs {
		c.drop(m.Topic, "expired", 1) // MQTT-3.3.2-5
		return false
	}
	if !c.roomLocked() {
		// The connection holds its byte budget (budget.go): a client that
		// does not read loses messages rather than the broker its memory.
		c.drop(m.Topic, "queue_bytes", 1)
		return false
	}
	om := &outMessage{m: m, qos: qos, retain: retain, subIDs: subIDs}
	if qos == 0 {
		return c.sendPublishLocked(om, 0, false)
	}
	if len(c.inflight) >= c.window {
		if len(c.queue) >= c.s.cfg.MaxQueued {
			c.drop(m.Topic, "queue_full", 1)
			return false
		}
		c.queue = append(c.queue, om)
		c.queuedBytes += queuedSize(m)
		return true
	}
	return c.startLocked(om)
}

// startLocked gives a QoS 1/2 message a packet ID and sends it.
func (c *conn) startLocked(om *outMessage) bool {
	id := c.nextPacketIDLocked()
	if !c.sendPublishLocked(om, id, false) {
		return false
	}
	c.inflight[id] = om
	return true
}

func (c *conn) nextPacketIDLocked() uint16 {
	lo := uint16(1)
	if c.sess != nil {
		lo = inboxIDs + 1 // below are the inbox's (seqPacketID)
	}
	for {
		c.nextID++
		if c.nextID < lo {
			c.nextID = lo
		}
		if _, used := c.inflight[c.nextID]; !used {
			return c.nextID // MQTT-2.2.1-4: not in use
		}
	}
}

func (c *conn) sendPublishLocked(om *outMessage, id uint16, dup bool) bool {
	m := om.m
	p := packet.Publish{Dup: dup, QoS: om.qos, Retain: om.retain, Topic: m.Topic, PacketID: id, Payload: m.Payload}
	if c.version == packet.V5 {
		pr := &p.Properties
		if m.HasPayloadFormat {
			pr.PayloadFormatIndicator, pr.HasPayloadFormatIndicator = byte(m.PayloadFormat), true
		}
		if m.ExpiresUnixMs != 0 {
			left := (m.ExpiresUnixMs - time.Now().UnixMilli() + 999) / 1000
			pr.MessageExpiryInterval, pr.HasMessageExpiryInterval = uint32(max(left, 1)), true // MQTT-3.3.2-6
		}
		pr.ContentType, pr.ResponseTopic, pr.CorrelationData = m.ContentType, m.ResponseTopic, m.CorrelationData
		for _, up := range m.UserProperties {
			pr.UserProperties = append(pr.UserProperties, packet.UserProperty{Key: up.Key, Value: up.Value})
		}
		pr.SubscriptionIdentifier = om.subIDs
		newAlias := false
		if c.aliasOutMax > 0 {
			if a, ok := c.aliasesOut[m.Topic]; ok {
				pr.TopicAlias, pr.HasTopicAlias = a, true
				p.Topic = ""
			} else if len(c.aliasesOut) < int(c.aliasOutMax) {
				pr.TopicAlias, pr.HasTopicAlias = uint16(len(c.aliasesOut)+1), true
				newAlias = true
			}
		}
		if c.maxOut > 0 && uint32(packet.Size(&p, c.version)) > c.maxOut {
			c.drop(m.Topic, "too_large_for_client", 1) // MQTT-3.1.2-25
			return false
		}
		if !c.enqueueLocked(&p) {
			return false
		}
		om.m = nil // encoded: an in-flight message keeps no copy (budget.go)
		if newAlias {
			// Known to the client only once a packet carrying it is sent:
			// a dropped packet must not leave an alias it never saw.
			if c.aliasesOut == nil {
				c.aliasesOut = map[string]uint16{}
			}
			c.aliasesOut[m.Topic] = pr.TopicAlias
		}
		c.s.m.delivered.Inc()
		return true
	}
	if !c.enqueueLocked(&p) {
		return false
	}
	om.m = nil // encoded: an in-flight message keeps no copy (budget.go)
	c.s.m.delivered.Inc()
	return true
}

// releaseCommitted sends the PUBRELs of inbox messages whose release (their
// PUBREC) the inbox has committed.
func (c *conn) releaseCommitted(seqs []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, seq := range seqs {
		id := seqPacketID(seq)
		if om, ok := c.inflight[id]; ok && om.inbox && om.seq == seq && om.released {
			c.enqueueLocked(&packet.Pubrel{PacketID: id}) // MQTT-4.3.3-4
		}
	}
}

// onAck handles the client's acknowledgements of outbound QoS 1 and 2.
func (c *conn) onAck(id uint16, t packet.Type, code packet.ReasonCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	om, ok := c.inflight[id]
	switch t {
	case packet.PUBACK:
		if !ok || om.qos != 1 {
			return
		}
	case packet.PUBREC:
		if !ok || om.qos != 2 {
			if c.version == packet.V5 {
				c.enqueueLocked(&packet.Pubrel{PacketID: id, ReasonCode: packet.PacketIdentifierNotFound})
			}
			return
		}
		if !code.IsError() {
			om.released = true
			if om.inbox {
				// The PUBREL waits until the inbox has committed that the
				// message is released: once the client has the PUBREL it
				// forgets the packet ID (MQTT-4.3.3, method B), so a
				// PUBLISH resent after a crash would be a second delivery.
				c.sess.pubrec(om.seq)
				return
			}
			c.enqueueLocked(&packet.Pubrel{PacketID: id}) // MQTT-4.3.3-4
			return
		}
		// A PUBREC with an error ends the exchange (MQTT-4.3.3-?): no PUBREL.
	case packet.PUBCOMP:
		if !ok || om.qos != 2 {
			return
		}
	}
	delete(c.inflight, id)
	c.roomFreedLocked()
	if om.inbox {
		c.sess.acked(om.seq) // committed to the inbox by the session's loop
	}
	for len(c.queue) > 0 && len(c.inflight) < c.window {
		next := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.queuedBytes -= queuedSize(next.m)
		if next.m.ExpiresUnixMs != 0 && time.Now().UnixMilli() >= next.m.ExpiresUnixMs {
			c.drop(next.m.Topic, "expired", 1)
			continue
		}
		c.startLocked(next)
	}
}
