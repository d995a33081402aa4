package mqtt

import (
	"context"
	"testing"

	"github.com/bifrost-mq/bifrost/mqtt/settings"
)

// BenchSettings sets every limit a PUBLISH is checked against, so high
// that a benchmark never reaches one.
func BenchSettings() settings.Settings {
	s := settings.Default()
	s.MaxTopicLength, s.MaxTopicLevels, s.MaxConnections = 256, 8, 1000
	s.PublishRate, s.InboundBytesPerSecond = 1e12, 1<<40
	return s
}

// BenchmarkPublishQuotaChecks is what a tenant's settings add to each
// inbound PUBLISH: the checks of publishOverQuota and the inbound
// bandwidth's token bucket (throttleInbound), with no settings (the
// default: no limits) and with every per-message limit set, none reached.
// Read with BenchmarkPublishPath, the whole path through a broker.
func BenchmarkPublishQuotaChecks(b *testing.B) {
	limited := BenchSettings()
	for _, bc := range []struct {
		name string
		set  settings.Settings
	}{{"no-settings", settings.Default()}, {"settings", limited}} {
		b.Run(bc.name, func(b *testing.B) {
			s := &Server{ctx: context.Background(), m: newMetrics(nil)}
			c := &conn{s: s, set: bc.set}
			c.id.Tenant = "acme"
			if setting := c.admit(false); setting != "" {
				b.Fatal(setting)
			}
			c.idle.lr = &lazyReader{}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if c.publishOverQuota("acme/sensors/17/temperature", 1) != "" {
					b.Fatal("over quota")
				}
				c.idle.lr.read += 64
				c.throttleInbound()
			}
		})
	}
}
