package ui

import (
	"context"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bifrost-mq/bifrost/api"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/ranges"
)

// NodeConfig names the objects of a running bifrost process (a standalone,
// a store or a frontend) that a NodeSource reads: the ones `bifrost admin
// cluster` and `bifrost admin ranges` answer from, the MQTT frontend's
// metrics, and the retained $SYS topics every frontend publishes.
type NodeConfig struct {
	// Name is the process's gossip member name, which is also its MQTT
	// frontend's NodeName: the frontend whose figures come from Gatherer.
	// Required.
	Name string
	// Membership returns the process's gossip view (ranges.Node.Membership,
	// ranges.Gateway.Membership). Required.
	Membership func() *ranges.Membership
	// Table is the process's routing table (Router().Table()). Required.
	Table *ranges.Table
	// Refresh, if set, asks the stores for the ranges they hold before the
	// table is read, as `bifrost admin ranges` does (ranges.Node.Refresh,
	// ranges.Gateway.Refresh); a failure only leaves the table as gossip
	// keeps it.
	Refresh func(context.Context) error
	// Retain, if set, reads the other frontends' figures from their
	// retained $SYS/brokers/<node>/ topics. Nil: only this process's.
	Retain *retain.Client
	// Gatherer is the process's Prometheus registry; its bifrost_mqtt_*
	// metrics are this process's frontend figures. Nil: none.
	Gatherer prometheus.Gatherer
}

// Validate reports the first missing field.
func (c NodeConfig) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("ui: NodeConfig.Name is required")
	case c.Membership == nil:
		return errors.New("ui: NodeConfig.Membership is required")
	case c.Table == nil:
		return errors.New("ui: NodeConfig.Table is required")
	}
	return nil
}

// NodeSource is the Source of a running bifrost process.
type NodeSource struct {
	cfg NodeConfig
}

// NewNodeSource returns the Source of the process cfg names.
func NewNodeSource(cfg NodeConfig) (*NodeSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &NodeSource{cfg: cfg}, nil
}

// The metrics of the MQTT frontend (mqtt/metrics.go) the page shows; the
// $SYS topics carry the same figures (mqtt/sys.go).
const (
	metricSessions  = "bifrost_mqtt_connections"
	metricPublished = "bifrost_mqtt_messages_published_total"
	metricDelivered = "bifrost_mqtt_messages_delivered_total"
)

// Snapshot reads the members from gossip, the ranges from the routing
// table, this process's frontend figures from its metrics and the other
// frontends' from their retained $SYS topics.
func (s *NodeSource) Snapshot(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{Node: s.cfg.Name}
	ms := s.cfg.Membership()
	if ms == nil {
		return nil, errors.New("gossip has not started")
	}
	var frontends []string
	for _, m := range ms.Members() {
		snap.Members = append(snap.Members, Member{Name: m.Name, Role: m.Meta.Role, StoreID: StoreID(m.Meta.StoreID), MQTT: m.Meta.MQTT,
			Gossip: m.GossipAddr, GRPC: m.Meta.GRPC, Raft: m.Meta.Raft, Health: m.State})
		if m.Meta.MQTT {
			frontends = append(frontends, m.Name)
		}
	}

	if s.cfg.Refresh != nil {
		_ = s.cfg.Refresh(ctx)
	}
	for _, r := range s.cfg.Table.All() {
		d := r.Desc
		rg := Range{ID: d.Id, Keyspace: kvstore.KeyspaceName(d.Keyspace), Start: printableKey(d.Start), End: printableKey(d.End),
			Ver: d.Ver, ConfVer: d.ConfVer, Replicas: []StoreID{}, Leader: StoreID(r.LeaderStore()),
			State: api.StateName(d.State), Size: r.Bytes, SizeKnown: r.BytesKnown}
		for _, rep := range d.Replicas {
			rg.Replicas = append(rg.Replicas, StoreID(rep.StoreId))
		}
		snap.Ranges = append(snap.Ranges, rg)
	}

	local, localErr := s.localFigures()
	if localErr != nil {
		snap.Errors = append(snap.Errors, "this process's metrics: "+localErr.Error())
	}
	sys, sysErr := s.sysFigures(ctx)
	if sysErr != nil {
		snap.Errors = append(snap.Errors, "$SYS figures of the frontends: "+sysErr.Error())
	}
	for _, name := range frontends {
		switch f, ok := sys[mqtt.SysNode(name)]; {
		case name == s.cfg.Name && local != nil:
			snap.Frontends = append(snap.Frontends, *local)
		case ok:
			f.Name = name
			snap.Frontends = append(snap.Frontends, f)
		default:
			snap.Frontends = append(snap.Frontends, FrontendSample{Name: name})
		}
	}
	return snap, nil
}

// localFigures reads this process's frontend figures from its registry; nil
// when it runs no frontend.
func (s *NodeSource) localFigures() (*FrontendSample, error) {
	if s.cfg.Gatherer == nil {
		return nil, nil
	}
	families, err := s.cfg.Gatherer.Gather()
	if err != nil && len(families) == 0 {
		return nil, err
	}
	f := &FrontendSample{Name: s.cfg.Name, At: time.Now(), From: "metrics"}
	found := false
	for _, fam := range families {
		var sum float64
		for _, m := range fam.GetMetric() {
			sum += metricValue(m)
		}
		switch fam.GetName() {
		case metricSessions:
			n := int64(sum)
			f.Sessions, found = &n, true
		case metricPublished:
			n := uint64(sum)
			f.In = &n
		case metricDelivered:
			n := uint64(sum)
			f.Out = &n
		}
	}
	if !found {
		return nil, nil
	}
	// A counter with no labels yet (nothing published) is not gathered.
	zero := uint64(0)
	if f.In == nil {
		f.In = &zero
	}
	if f.Out == nil {
		f.Out = &zero
	}
	return f, nil
}

func metricValue(m *dto.Metric) float64 {
	if g := m.GetGauge(); g != nil {
		return g.GetValue()
	}
	return m.GetCounter().GetValue()
}

// sysFigures reads every frontend's retained $SYS figures, by $SYS node.
func (s *NodeSource) sysFigures(ctx context.Context) (map[string]FrontendSample, error) {
	out := map[string]FrontendSample{}
	if s.cfg.Retain == nil {
		return out, nil
	}
	req := &retainpb.MatchRequest{Tenant: auth.DefaultTenant, Filter: "$SYS/brokers/#", Limit: 1000}
	for {
		resp, err := s.cfg.Retain.Match(ctx, req)
		if err != nil {
			return out, err
		}
		for _, m := range resp.Messages {
			node, leaf, ok := strings.Cut(strings.TrimPrefix(m.Topic, "$SYS/brokers/"), "/")
			if !ok {
				continue
			}
			f := out[node]
			f.From = "$SYS"
			if at := time.UnixMilli(m.PublishedUnixMs); at.After(f.At) {
				f.At = at
			}
			v, err := strconv.ParseUint(string(m.Payload), 10, 64)
			if err != nil {
				continue // version, uptime
			}
			switch leaf {
			case "clients/connected":
				n := int64(v)
				f.Sessions = &n
			case "messages/received":
				f.In = &v
			case "messages/sent":
				f.Out = &v
			}
			out[node] = f
		}
		if len(resp.Next) == 0 {
			return out, nil
		}
		req.From = resp.Next
	}
}

// printableKey renders a key as text when every character of it prints,
// else as 0x-hex.
func printableKey(b []byte) string {
	if !utf8.Valid(b) {
		return "0x" + hex.EncodeToString(b)
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) {
			return "0x" + hex.EncodeToString(b)
		}
	}
	return string(b)
}

var _ Source = (*NodeSource)(nil)
