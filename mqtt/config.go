package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/events"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
	"github.com/bifrost-mq/bifrost/mqtt/settings"
)

// Dist is what the frontend needs of the dist coprocessor; *dist.Client is one.
type Dist interface {
	AddRoute(ctx context.Context, req *distpb.AddRouteRequest) (*distpb.Output, error)
	RemoveRoute(ctx context.Context, req *distpb.RemoveRouteRequest) (*distpb.Output, error)
	Match(ctx context.Context, req *distpb.MatchRequest) (*distpb.MatchResponse, error)
}

// Retain is what the frontend needs of the retain coprocessor; *retain.Client is one.
type Retain interface {
	Set(ctx context.Context, req *retainpb.SetRequest) (*retainpb.SetResponse, error)
	Match(ctx context.Context, req *retainpb.MatchRequest) (*retainpb.MatchResponse, error)
}

// Config configures a frontend. Zero values take the documented defaults.
type Config struct {
	// ReceiverID names this frontend in dist routes; other frontends dial
	// the address it carries. Build it with NewReceiverID. Required.
	ReceiverID string
	// Listeners to open; none is allowed (a frontend reached only in tests
	// through ServeConn).
	Listeners []listener.Config

	// MaxPacketSize bounds an inbound packet (announced in MQTT 5).
	// Default 1 MiB.
	MaxPacketSize uint32
	// ReceiveMaximum is how many inbound QoS 1 and 2 publishes a client may
	// have unacknowledged (announced in MQTT 5). Default 128.
	ReceiveMaximum uint16
	// MaxInflight bounds outbound QoS 1 and 2 messages awaiting a client's
	// acknowledgement (capped further by an MQTT 5 client's receive
	// maximum). Default 64.
	MaxInflight uint16
	// MaxQueued bounds the messages waiting behind a full in-flight window
	// per connection; more are dropped and counted. Default 1000.
	MaxQueued int
	// MaxQueuedBytes is the byte budget of a connection: what the frontend
	// holds for it (encoded packets its socket has not taken, messages
	// queued behind the window). Messages are taken while it holds less;
	// past it, a clean session's messages are dropped and counted, a
	// persistent session's stay in its inbox until the client reads
	// (budget.go). Default 8 MiB.
	MaxQueuedBytes int
	// TopicAliasMaximum is how many topic aliases a client may set (MQTT 5).
	// Default 64; 0 keeps the default, use NoTopicAliases for none.
	TopicAliasMaximum uint16
	NoTopicAliases    bool
	// MaxKeepAlive caps a client's keep-alive in seconds; an MQTT 5 client
	// asking for more (or for none) is told the cap, a 3.x one is refused
	// (CONNACK 2, as mosquitto does). Default 0: no cap.
	MaxKeepAlive uint16
	// PacketTimeout bounds the time from a packet's first byte to its last
	// where the keep-alive does not (no keep-alive, or a longer one).
	// Default 30s.
	PacketTimeout time.Duration
	// ConnectTimeout is how long a new connection may take to send CONNECT.
	// Default 10s.
	ConnectTimeout time.Duration
	// RetainPageSize is how many retained messages one fetch of a new
	// subscription's matches asks for (at most 1000). Every match is sent
	// (MQTT-3.3.1-9), a page at a time, as fast as the client's flow
	// control lets it (retained.go). Default 100.
	RetainPageSize uint32
	// MatchCacheTTL bounds how long a cached dist match is used without a
	// route change being heard of. Default 2s; negative disables the cache.
	MatchCacheTTL time.Duration
	// RequestTimeout bounds each call to dist, retain or another frontend.
	// Default 5s.
	RequestTimeout time.Duration
	// InsertTimeout bounds how long a publish waits for the inboxes of the
	// persistent sessions it matched to take it. Long next to a leader
	// election in an inbox range, so that a publisher gets its
	// acknowledgement late rather than a closed connection. Default 30s.
	InsertTimeout time.Duration
	// PublishPipeline is how many inbound publishes of one connection may
	// wait for their inboxes at once; past it the connection is not read
	// until the oldest is acknowledged. Default ReceiveMaximum.
	PublishPipeline int

	// DeadFrontendAfter is how long another frontend must be both
	// unreachable and gone from gossip before this one removes the routes
	// it finds of it. Long next to gossip's convergence, so that a frontend
	// that has just started (not yet known everywhere) keeps its routes.
	// Default 30s.
	DeadFrontendAfter time.Duration

	// Dist and Retain are required.
	Dist   Dist
	Retain Retain
	// Inbox keeps persistent sessions; nil: every session is transient
	// (CONNACK says session present 0, MQTT 5 clients are told expiry 0).
	Inbox Inbox
	// MaxSessionExpiry caps a session's expiry interval in seconds (a 3.x
	// persistent session's included); an MQTT 5 client asking for more is
	// told the cap in CONNACK. Default 0: no cap.
	MaxSessionExpiry uint32
	// ReplaceForeignSessions: a client ID whose detached session belongs
	// to another user (Identity.Username; "" is anonymous) gets a fresh
	// session, discarding the other user's. Default false: the CONNECT is
	// refused (CONNACK 0x87 / 5). A client ID with a live connection of
	// another user is refused either way.
	ReplaceForeignSessions bool
	// InboxPollInterval is how often a connected persistent session looks
	// at its inbox without being told of new messages (a lost notification,
	// a will inserted by the inbox scheduler), and checks it still owns the
	// session. Default 5s.
	InboxPollInterval time.Duration
	// Auth decides who connects and what they may do; default allow-all.
	Auth auth.Authenticator
	// Settings gives each tenant's limits (quota.go, mqtt/settings); nil:
	// no limits.
	Settings settings.Provider
	// Events receives what happens to clients (events.go); nil: none. The
	// server closes it on Close when it has a Close method.
	Events events.Collector
	// Frontends returns the gRPC addresses of the other frontends, for
	// claims and route-change broadcasts; nil: none. The server does not
	// modify the slice it returns (which may be shared).
	Frontends func() []string
	// ClusterTLS, if set, is the node's cluster identity: the Frontend
	// clients of other frontends use mutual TLS with it (the server this
	// frontend's service is registered on must use it too). Nil: plaintext.
	ClusterTLS *clustertls.Credentials

	// NodeName names this frontend in its $SYS topics
	// ($SYS/brokers/<NodeName>/...). Default: the address in ReceiverID.
	NodeName string
	// Version is what $SYS/brokers/<node>/version says. Default "bifrost".
	Version string
	// SysInterval is how often the $SYS topics are published (sys.go).
	// Default 10s; negative: never.
	SysInterval time.Duration

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

func (c Config) withDefaults() Config {
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = 1 << 20
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = 128
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 64
	}
	if c.MaxQueued == 0 {
		c.MaxQueued = 1000
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = 8 << 20
	}
	if c.TopicAliasMaximum == 0 && !c.NoTopicAliases {
		c.TopicAliasMaximum = 64
	}
	if c.PacketTimeout == 0 {
		c.PacketTimeout = 30 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.RetainPageSize == 0 {
		c.RetainPageSize = 100
	}
	if c.MatchCacheTTL == 0 {
		c.MatchCacheTTL = 2 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.InsertTimeout == 0 {
		c.InsertTimeout = 30 * time.Second
	}
	if c.PublishPipeline == 0 {
		c.PublishPipeline = int(c.ReceiveMaximum)
	}
	if c.InboxPollInterval == 0 {
		c.InboxPollInterval = 5 * time.Second
	}
	if c.DeadFrontendAfter == 0 {
		c.DeadFrontendAfter = 30 * time.Second
	}
	if c.Auth == nil {
		c.Auth = auth.AllowAll()
	}
	if c.NodeName == "" {
		if addr, ok := receiverAddr(c.ReceiverID); ok {
			c.NodeName = addr
		} else {
			c.NodeName = c.ReceiverID
		}
	}
	if c.Version == "" {
		c.Version = "bifrost"
	}
	if c.SysInterval == 0 {
		c.SysInterval = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first bad field.
func (c Config) Validate() error {
	if c.ReceiverID == "" {
		return errors.New("mqtt: a receiver ID is required")
	}
	if c.Dist == nil || c.Retain == nil {
		return errors.New("mqtt: dist and retain clients are required")
	}
	if c.MaxPacketSize != 0 && c.MaxPacketSize < 64 {
		return fmt.Errorf("mqtt: max packet size %d is too small (at least 64)", c.MaxPacketSize)
	}
	if c.MaxQueued < 0 {
		return fmt.Errorf("mqtt: max queued %d must not be negative", c.MaxQueued)
	}
	if c.MaxQueuedBytes < 0 {
		return fmt.Errorf("mqtt: max queued bytes %d must not be negative", c.MaxQueuedBytes)
	}
	if c.PublishPipeline < 0 || c.InsertTimeout < 0 {
		return fmt.Errorf("mqtt: publish pipeline %d and insert timeout %v must not be negative", c.PublishPipeline, c.InsertTimeout)
	}
	for i, l := range c.Listeners {
		if err := l.Validate(); err != nil {
			return fmt.Errorf("mqtt: listener %d: %w", i, err)
		}
		if l.Tenant != "" {
			if err := auth.ValidateTenant(l.Tenant); err != nil {
				return fmt.Errorf("mqtt: listener %d (%s): %w", i, l.Kind, err)
			}
		}
	}
	return nil
}
