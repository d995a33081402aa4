// Package settings is the setting provider plug-in: each tenant's limits
// (docs/plugins.md). A Provider never fails: what it cannot learn it takes
// from the config file's values, so that a broken webhook never leaves a
// tenant without limits nor refuses its clients.
//
// The frontend asks a Provider at CONNECT and keeps the answer with the
// connection; the per-message checks read plain fields of that copy.
package settings

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Settings are one tenant's limits. A zero number is no limit.
type Settings struct {
	// MaxConnections bounds the tenant's connections on one frontend
	// (CONNACK 0x97, 3.x: 3 server unavailable).
	MaxConnections int
	// MaxSessions bounds the tenant's connected persistent sessions on one
	// frontend (CONNACK 0x97 / 3).
	MaxSessions int
	// MaxSubscriptions bounds one session's subscriptions (SUBACK 0x97 /
	// 0x80 for each filter past it).
	MaxSubscriptions int
	// MaxTopicLength (bytes) and MaxTopicLevels bound a published topic
	// and a subscription's filter (PUBACK/PUBREC 0x97, SUBACK 0x97 / 0x80;
	// a QoS 0 or 3.x publish over them is dropped).
	MaxTopicLength int
	MaxTopicLevels int
	// MaxQoS is the highest QoS the tenant may publish (MQTT 5: announced
	// in CONNACK, a PUBLISH over it is DISCONNECT 0x9B; 3.x: closed) and is
	// granted on a subscription. Default 2.
	MaxQoS byte
	// MaxRetained bounds the tenant's retained messages per retain range
	// (PUBACK 0x97), MaxRoutes its dist routes (SUBACK 0x97).
	MaxRetained uint32
	MaxRoutes   uint32
	// InboxQueueLength bounds each queue of a persistent session's inbox
	// (0: the inbox's default, 10000); a full queue drops its oldest
	// message when DropOldest, else the arriving one.
	InboxQueueLength uint32
	DropOldest       bool
	// PublishRate bounds each connection's PUBLISH packets per second,
	// with a burst of one second's worth (DISCONNECT 0x96; 3.x: closed).
	PublishRate float64
	// MaxSessionExpiry caps a session's expiry interval in seconds (the
	// frontend's own cap applies too; the lower wins).
	MaxSessionExpiry uint32

	// The resource throttler's limits, per tenant and frontend:
	// ConnectRate bounds new connections per second (CONNACK 0x9F / 3),
	// InboundBytesPerSecond the bytes read from its clients (reading slows
	// down; nothing is dropped).
	ConnectRate           float64
	InboundBytesPerSecond int64
}

// Default is the settings of a tenant nothing configures: no limits.
func Default() Settings { return Settings{MaxQoS: 2} }

// Provider gives a tenant's settings; it never fails and answers within
// ctx (falling back to its configured values).
type Provider interface {
	Settings(ctx context.Context, tenant string) Settings
}

// Static is the config file's settings: Defaults for every tenant, with
// Tenants' own where named.
type Static struct {
	Defaults Settings
	Tenants  map[string]Settings
}

// Settings implements Provider.
func (s *Static) Settings(_ context.Context, tenant string) Settings {
	if t, ok := s.Tenants[tenant]; ok {
		return t
	}
	return s.Defaults
}

// Keys are the names of the settings in the config file's tables (and,
// with '_' for '-', in the webhook's answer).
var Keys = []string{
	"max-connections", "max-sessions", "max-subscriptions", "max-topic-length", "max-topic-levels",
	"max-qos", "max-retained", "max-routes", "inbox-queue-length", "inbox-drop-policy",
	"publish-rate", "max-session-expiry", "connect-rate", "inbound-bytes-per-second",
}

// Apply sets the named settings of values on s: keys are those of Keys
// (or with '_' for '-'); numbers are whole and not negative, rates may
// have a fraction, inbox-drop-policy is "oldest" or "newest".
func (s *Settings) Apply(values map[string]any) error {
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if err := s.apply(strings.ReplaceAll(k, "_", "-"), values[k]); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

func (s *Settings) apply(key string, v any) error {
	if key == "inbox-drop-policy" {
		switch v {
		case "oldest":
			s.DropOldest = true
		case "newest":
			s.DropOldest = false
		default:
			return fmt.Errorf("want \"oldest\" or \"newest\", got %v", v)
		}
		return nil
	}
	var f float64
	switch n := v.(type) {
	case int64:
		f = float64(n)
	case float64:
		f = n
	case int:
		f = float64(n)
	default:
		return fmt.Errorf("want a number, got %v", v)
	}
	if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("want 0 or more, got %v", v)
	}
	whole := func(limit float64) (float64, error) {
		if f != math.Trunc(f) || f > limit {
			return 0, fmt.Errorf("want a whole number up to %v, got %v", limit, v)
		}
		return f, nil
	}
	var err error
	switch key {
	case "publish-rate":
		s.PublishRate = f
	case "connect-rate":
		s.ConnectRate = f
	case "max-qos":
		if f, err = whole(2); err == nil {
			s.MaxQoS = byte(f)
		}
	case "inbound-bytes-per-second":
		if f, err = whole(1 << 50); err == nil {
			s.InboundBytesPerSecond = int64(f)
		}
	case "max-connections", "max-sessions", "max-subscriptions", "max-topic-length", "max-topic-levels":
		if f, err = whole(math.MaxInt32); err == nil {
			*map[string]*int{"max-connections": &s.MaxConnections, "max-sessions": &s.MaxSessions,
				"max-subscriptions": &s.MaxSubscriptions, "max-topic-length": &s.MaxTopicLength,
				"max-topic-levels": &s.MaxTopicLevels}[key] = int(f)
		}
	case "max-retained", "max-routes", "inbox-queue-length", "max-session-expiry":
		if f, err = whole(math.MaxUint32); err == nil {
			*map[string]*uint32{"max-retained": &s.MaxRetained, "max-routes": &s.MaxRoutes,
				"inbox-queue-length": &s.InboxQueueLength, "max-session-expiry": &s.MaxSessionExpiry}[key] = uint32(f)
		}
	default:
		return fmt.Errorf("unknown setting (want %s)", strings.Join(Keys, ", "))
	}
	return err
}
