package mqtt

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
)

// The $SYS topics: every frontend publishes its own figures, as mosquitto
// publishes its one broker's, under $SYS/brokers/<node>/ (EMQX's layout for
// a cluster): version, uptime, clients/connected, messages/received,
// messages/sent, subscriptions/count. They are retained QoS 0 messages,
// published every SysInterval and at once when the listeners open, each with
// a message expiry of three intervals, so that the figures of a node that
// is gone expire instead of standing forever. Subscribers read them as any
// retained message ("#" does not match them: MQTT-4.7.2-1); clients may not
// publish to $SYS (reservedTopic).

// reservedTopic reports whether topic is the broker's alone: a client's
// PUBLISH to it is refused as not authorized.
func reservedTopic(topic string) bool {
	return topic == "$SYS" || strings.HasPrefix(topic, "$SYS/") || strings.HasPrefix(topic, "$bifrost/")
}

// SysNode is the topic level that names a frontend of NodeName name in its
// $SYS topics ($SYS/brokers/<SysNode(name)>/...): the name with the
// characters a topic level cannot hold ('/', '+', '#', NUL) as '_'.
func SysNode(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '+' || r == '#' || r == 0 {
			return '_'
		}
		return r
	}, name)
}

// sysPrefix is the node's $SYS topic prefix.
func (s *Server) sysPrefix() string {
	return "$SYS/brokers/" + SysNode(s.cfg.NodeName) + "/"
}

// runSys publishes the $SYS topics until the server closes.
func (s *Server) runSys() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.SysInterval)
	defer t.Stop()
	for {
		s.publishSys(s.started)
		select {
		case <-s.bg.Done():
			return
		case <-t.C:
		}
	}
}

// publishSys publishes the node's figures once.
func (s *Server) publishSys(started time.Time) {
	now := time.Now()
	prefix := s.sysPrefix()
	figures := []struct{ leaf, value string }{
		{"version", s.cfg.Version},
		{"uptime", strconv.FormatInt(int64(now.Sub(started)/time.Second), 10) + " seconds"},
		{"clients/connected", strconv.FormatInt(int64(metricValue(s.m.connections)), 10)},
		{"messages/received", strconv.FormatUint(uint64(s.publishedTotal()), 10)},
		{"messages/sent", strconv.FormatUint(uint64(metricValue(s.m.delivered)), 10)},
		{"subscriptions/count", strconv.FormatInt(int64(metricValue(s.m.subscriptions)), 10)},
	}
	expires := now.Add(3 * s.cfg.SysInterval).UnixMilli()
	for _, f := range figures {
		m := &mqttpb.Message{Topic: prefix + f.leaf, Payload: []byte(f.value), Retain: true,
			Publisher: "$SYS", ExpiresUnixMs: expires, HasPayloadFormat: true, PayloadFormat: 1}
		ctx, cancel := context.WithTimeout(s.bg, s.cfg.RequestTimeout)
		err := s.retain(ctx, auth.DefaultTenant, m)
		if err == nil {
			_, err = s.dispatch(ctx, auth.DefaultTenant, m)
		}
		cancel()
		if err != nil {
			if s.bg.Err() == nil {
				s.log.Debug("publishing $SYS figures failed", "topic", m.Topic, "err", err)
			}
			return
		}
	}
}

// publishedTotal sums the messages clients published, over QoS levels.
func (s *Server) publishedTotal() float64 {
	var n float64
	for _, q := range []string{"0", "1", "2"} {
		n += metricValue(s.m.published.WithLabelValues(q))
	}
	return n
}

// metricValue reads a gauge's or a counter's current value.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if m.Write(&d) != nil {
		return 0
	}
	if g := d.GetGauge(); g != nil {
		return g.GetValue()
	}
	return d.GetCounter().GetValue()
}
