package mqtt

import (
	"context"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/mqtt/events"
	"github.com/bifrost-mq/bifrost/mqtt/settings"
)

// Tenants' settings and the resource throttler (docs/plugins.md). The
// setting provider is asked once per CONNECT; the connection keeps its
// tenant's settings by value, so that the checks on the publish path read
// fields and allocate nothing. What a tenant uses on this frontend (its
// connections, persistent sessions, connect rate and inbound bytes) lives
// in one tenantUsage per tenant, shared by its connections.

// tenantUsage is one tenant's use of this frontend.
type tenantUsage struct {
	conns, sessions atomic.Int64

	mu sync.Mutex
	// set is the tenant's settings as last asked for.
	set      settings.Settings
	connects *rate.Limiter // nil: no connect rate
	// inbound is shared by the tenant's connections; nil: no limit. Read
	// without mu by readers once taken (a *rate.Limiter is safe to share).
	inbound atomic.Pointer[rate.Limiter]
}

// quotaLabelTenants bounds the tenant label values of
// bifrost_mqtt_tenant_quota_exceeded_total: past it, tenants are counted
// as "_other".
const quotaLabelTenants = 1000

// tenantUsages is the frontend's tenantUsage of each tenant seen (kept:
// a tenant's connect rate must outlive its connections; tenants come from
// the auth provider, which the operator bounds).
type tenantUsages struct {
	mu      sync.Mutex
	m       map[string]*tenantUsage
	labeled map[string]bool
}

// usage returns the tenant's usage, made current with set.
func (s *Server) usage(tenant string, set settings.Settings) *tenantUsage {
	s.tenants.mu.Lock()
	if s.tenants.m == nil {
		s.tenants.m = map[string]*tenantUsage{}
	}
	u := s.tenants.m[tenant]
	if u == nil {
		u = &tenantUsage{}
		s.tenants.m[tenant] = u
	}
	s.tenants.mu.Unlock()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.set == set && (u.connects != nil || set.ConnectRate == 0) {
		return u
	}
	u.set = set
	switch {
	case set.ConnectRate == 0:
		u.connects = nil
	case u.connects == nil:
		u.connects = rate.NewLimiter(rate.Limit(set.ConnectRate), max(1, int(math.Ceil(set.ConnectRate))))
	default:
		u.connects.SetLimit(rate.Limit(set.ConnectRate))
		u.connects.SetBurst(max(1, int(math.Ceil(set.ConnectRate))))
	}
	// A second's bytes at once; a larger packet is charged in bursts
	// (throttleInbound).
	burst := int(min(max(set.InboundBytesPerSecond, 1), math.MaxInt32))
	switch in := u.inbound.Load(); {
	case set.InboundBytesPerSecond == 0:
		u.inbound.Store(nil)
	case in == nil:
		u.inbound.Store(rate.NewLimiter(rate.Limit(set.InboundBytesPerSecond), burst))
	default:
		in.SetLimit(rate.Limit(set.InboundBytesPerSecond))
		in.SetBurst(burst)
	}
	return u
}

// settingsOf asks the setting provider for a tenant's settings.
func (s *Server) settingsOf(ctx context.Context, tenant string) settings.Settings {
	if s.cfg.Settings == nil {
		return settings.Default()
	}
	// A provider that calls out bounds its own calls (the webhook's
	// Timeout); a timer per CONNECT for the static one cost 2% of a connect.
	return s.cfg.Settings.Settings(ctx, tenant)
}

// limitsOf is a tenant's settings where no connection carries them (a
// route, a retained message, an operator's call): those its last CONNECT
// here saw, else the provider's.
func (s *Server) limitsOf(tenant string) settings.Settings {
	s.tenants.mu.Lock()
	u := s.tenants.m[tenant]
	s.tenants.mu.Unlock()
	if u != nil {
		u.mu.Lock()
		defer u.mu.Unlock()
		return u.set
	}
	return s.settingsOf(s.ctx, tenant)
}

// admit takes a connection of the tenant past the throttler: its connect
// rate, its connections, and (persistent) its sessions. It returns the
// setting refused, "" when admitted; once admitted, c.release gives back
// what was taken.
func (c *conn) admit(persistent bool) string {
	u := c.s.usage(c.id.Tenant, c.set)
	u.mu.Lock()
	allowed := u.connects == nil || u.connects.Allow()
	u.mu.Unlock()
	if !allowed {
		return "connect-rate"
	}
	if n := u.conns.Add(1); c.set.MaxConnections > 0 && n > int64(c.set.MaxConnections) {
		u.conns.Add(-1)
		return "max-connections"
	}
	if persistent && c.set.MaxSessions > 0 {
		if n := u.sessions.Add(1); n > int64(c.set.MaxSessions) {
			u.sessions.Add(-1)
			u.conns.Add(-1)
			return "max-sessions"
		}
		c.countedSession = true
	}
	c.usage = u
	if c.set.PublishRate > 0 {
		c.pubRate = newBucket(c.set.PublishRate, time.Now())
	}
	if b := c.set.InboundBytesPerSecond; b > 0 {
		c.inboundChunk = min(max(b/16, 1), 16<<10)
	}
	return ""
}

// release gives back what admit took; once, from finish.
func (c *conn) release() {
	if c.usage == nil {
		return
	}
	c.usage.conns.Add(-1)
	if c.countedSession {
		c.usage.sessions.Add(-1)
	}
	c.usage = nil
}

// overQuota counts and reports a setting the client went over.
func (c *conn) overQuota(setting, topic string) {
	c.s.quotaExceeded(c.id.Tenant, setting)
	c.emit(events.QuotaExceeded, topic, 0, setting)
}

// quotaExceeded counts a tenant's setting exceeded.
func (s *Server) quotaExceeded(tenant, setting string) {
	label := tenant
	s.tenants.mu.Lock()
	if !s.tenants.labeled[tenant] {
		if len(s.tenants.labeled) < quotaLabelTenants {
			if s.tenants.labeled == nil {
				s.tenants.labeled = map[string]bool{}
			}
			s.tenants.labeled[tenant] = true
		} else {
			label = "_other"
		}
	}
	s.tenants.mu.Unlock()
	s.m.quotaExceeded.WithLabelValues(label, setting).Inc()
}

// throttleInbound waits until the tenant's inbound bandwidth has room for
// what the connection read since it last asked: the socket is read more
// slowly, nothing is dropped.
func (c *conn) throttleInbound() {
	if c.usage == nil {
		return
	}
	lim := c.usage.inbound.Load()
	if lim == nil || c.idle.lr == nil {
		return
	}
	// Charged by the chunk (a 16th of a second's bytes, at most 16 KiB):
	// the shared bucket's lock is taken once per chunk, not per packet.
	n := c.idle.lr.read - c.readCharged
	if n < c.inboundChunk {
		return
	}
	c.readCharged = c.idle.lr.read
	// Reservations queue behind each other: the last one's delay is the
	// whole wait.
	now, burst := time.Now(), int64(lim.Burst())
	var d time.Duration
	for ; n > 0; n -= burst {
		d = lim.ReserveN(now, int(min(n, burst))).Delay()
	}
	if d > 0 {
		c.s.m.throttleWaits.Inc()
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.s.ctx.Done():
			t.Stop()
		}
	}
}

// inboxLimits are the tenant's limits of a persistent session's inbox;
// nil: the inbox's defaults.
func (c *conn) inboxLimits() *inboxpb.Limits {
	if c.set.InboxQueueLength == 0 && !c.set.DropOldest {
		return nil
	}
	return &inboxpb.Limits{MaxQos0: c.set.InboxQueueLength, MaxQos12: c.set.InboxQueueLength, DropOldest: c.set.DropOldest}
}

// maxSessionExpiry is the lower of the frontend's cap and the tenant's
// (0: no cap).
func (c *conn) maxSessionExpiry() uint32 {
	a, b := c.s.cfg.MaxSessionExpiry, c.set.MaxSessionExpiry
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

// publishOverQuota is the check of a PUBLISH against the tenant's
// settings: the setting it goes over, or "". Fields and a token bucket
// only: nothing allocated.
func (c *conn) publishOverQuota(topic string, qos byte) string {
	if c.pubRate != nil && !c.pubRate.take(time.Now()) {
		return "publish-rate"
	}
	if qos > c.set.MaxQoS {
		return "max-qos"
	}
	return topicOverQuota(&c.set, topic)
}

// topicOverQuota names the setting a topic name or filter goes over, or "".
func topicOverQuota(set *settings.Settings, topic string) string {
	if set.MaxTopicLength > 0 && len(topic) > set.MaxTopicLength {
		return "max-topic-length"
	}
	if set.MaxTopicLevels > 0 && strings.Count(topic, "/")+1 > set.MaxTopicLevels {
		return "max-topic-levels"
	}
	return ""
}

// bucket is a connection's token bucket of PUBLISH packets: rate a
// second, a burst of one second's (at least one). Used by the
// connection's reader only, so unlocked; no allocation per take.
type bucket struct {
	perNano, burst, tokens float64
	last                   int64
}

func newBucket(perSecond float64, now time.Time) *bucket {
	burst := max(1, math.Ceil(perSecond))
	return &bucket{perNano: perSecond / 1e9, burst: burst, tokens: burst, last: now.UnixNano()}
}

// take takes a token if there is one.
func (b *bucket) take(now time.Time) bool {
	t := now.UnixNano()
	if d := t - b.last; d > 0 {
		b.tokens = min(b.burst, b.tokens+float64(d)*b.perNano)
		b.last = t
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
