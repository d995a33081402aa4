package ranges

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// Roles a member announces.
const (
	RoleStore    = "store"
	RoleFrontend = "frontend"
)

// MemberMeta is the metadata every member gossips about itself.
type MemberMeta struct {
	StoreID uint64 `json:"id,omitempty"`
	Role    string `json:"role"`
	GRPC    string `json:"grpc,omitempty"`
	Raft    string `json:"raft,omitempty"`
	// Bootstrapped is set once the member holds or has held ranges: a cluster
	// exists and no store may bootstrap another.
	Bootstrapped bool `json:"boot,omitempty"`
	// MQTT is set when the member runs an MQTT frontend whose Frontend gRPC
	// service listens on GRPC.
	MQTT bool `json:"mqtt,omitempty"`
}

// MembershipConfig configures gossip.
type MembershipConfig struct {
	// Name is the member's unique name.
	Name string
	// BindAddr is host:port for gossip (UDP and TCP).
	BindAddr string
	// AdvertiseAddr is host:port others reach; defaults to BindAddr.
	AdvertiseAddr string
	// Join lists seeds; empty starts a new gossip cluster.
	Join []string
	// PushPullInterval spreads range descriptors; default 2s.
	PushPullInterval time.Duration
	// Fast lowers probe and gossip intervals, for tests on loopback.
	Fast bool
	// SecretKey, if set, encrypts and authenticates every gossip message
	// (memberlist's AES-GCM; 16, 24 or 32 bytes): a member without the key
	// cannot join, and its messages are dropped. Nil: plaintext gossip.
	SecretKey []byte
	Logger    *slog.Logger
	// OnLeave, when set, is told of a member that left or was declared
	// dead, on a goroutine of its own.
	OnLeave func(Member)
}

// Membership is this process's view of the cluster through SWIM gossip.
type Membership struct {
	ml *memberlist.Memberlist
	// members is our copy of memberlist's view, kept by its event delegate:
	// the *Node values memberlist hands out are mutated under its own lock, so
	// reading them later races.
	mu      sync.RWMutex
	members map[string]Member
	// frontends caches Frontends until the members change.
	frontends []string
	meta      func() MemberMeta
	state     func() []byte
	merge     func([]byte)
	log       *slog.Logger
	onLeave   func(Member)
	// closed stops retryJoin; joinDone is closed when it returned.
	closed    chan struct{}
	closeOnce sync.Once
	joinDone  chan struct{}
}

// NewMembership starts gossip. meta is asked for the local metadata whenever
// memberlist needs it; state returns the local range state to push, merge
// receives a remote member's.
func NewMembership(cfg MembershipConfig, meta func() MemberMeta, state func() []byte, merge func([]byte)) (*Membership, error) {
	host, portStr, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", cfg.BindAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: bad port", cfg.BindAddr)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if k := len(cfg.SecretKey); k != 0 && k != 16 && k != 24 && k != 32 {
		return nil, fmt.Errorf("gossip key: %d bytes, want 16, 24 or 32", k)
	}
	m := &Membership{meta: meta, state: state, merge: merge, log: cfg.Logger, members: map[string]Member{}, onLeave: cfg.OnLeave,
		closed: make(chan struct{}), joinDone: make(chan struct{})}
	mc := memberlist.DefaultLANConfig()
	if cfg.Fast {
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		mc.GossipInterval = 50 * time.Millisecond
		mc.SuspicionMult = 2
	}
	mc.Name = cfg.Name
	mc.BindAddr = host
	mc.BindPort = port
	if mc.AdvertiseAddr, mc.AdvertisePort, err = gossipAdvertise(cfg.BindAddr, cfg.AdvertiseAddr); err != nil {
		return nil, err
	}
	mc.PushPullInterval = cfg.PushPullInterval
	if mc.PushPullInterval == 0 {
		mc.PushPullInterval = 2 * time.Second
	}
	mc.SecretKey = cfg.SecretKey
	mc.Delegate = delegate{m}
	mc.Events = events{m}
	mc.Logger = log.New(&memberlistLog{cfg.Logger}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.BindAddr, err)
	}
	m.ml = ml
	if len(cfg.Join) > 0 {
		if _, err := ml.Join(cfg.Join); err != nil {
			// Seeds may not be up yet: keep trying in the background.
			cfg.Logger.Warn("gossip join failed, retrying", "seeds", cfg.Join, "err", err)
			go m.retryJoin(cfg.Join)
			return m, nil
		}
	}
	close(m.joinDone)
	return m, nil
}

// gossipAdvertise is the IP and port memberlist tells peers to dial: those
// of adv, else of bind. memberlist takes only an IP, so a host name (a
// container's service name) is resolved here, once. An unspecified IP
// (bind 0.0.0.0 or [::] with no adv) gives no IP: memberlist then picks
// this host's private address, where advertising 0.0.0.0 would send every
// peer to itself.
func gossipAdvertise(bind, adv string) (string, int, error) {
	if adv == "" {
		adv = bind
	}
	host, portStr, err := net.SplitHostPort(adv)
	if err != nil {
		return "", 0, fmt.Errorf("gossip advertise address %q: %w", adv, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("gossip advertise address %q: bad port", adv)
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() {
			return "", port, nil
		}
		return host, port, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return "", 0, fmt.Errorf("gossip advertise address %q: cannot resolve %s: %v", adv, host, err)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), port, nil
		}
	}
	return ips[0].String(), port, nil
}

func (m *Membership) retryJoin(seeds []string) {
	defer close(m.joinDone)
	for i := 0; i < 600; i++ {
		select {
		case <-m.closed:
			return
		case <-time.After(time.Second):
		}
		if n, err := m.ml.Join(seeds); err == nil && n > 0 {
			return
		}
	}
}

// Member is one live member with its metadata.
type Member struct {
	Name       string
	GossipAddr string
	State      string
	Meta       MemberMeta
}

// Members lists the live members, by name.
func (m *Membership) Members() []Member {
	m.mu.RLock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		out = append(out, mem)
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// events copies memberlist's node events into Membership.members. Memberlist
// calls it with its node lock held, so the *Node is stable while we copy.
type events struct{ m *Membership }

func (e events) NotifyJoin(n *memberlist.Node)   { e.m.set(n) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.m.set(n) }
func (e events) NotifyLeave(n *memberlist.Node) {
	e.m.mu.Lock()
	mem, ok := e.m.members[n.Name]
	delete(e.m.members, n.Name)
	e.m.frontends = nil
	e.m.mu.Unlock()
	if ok && e.m.onLeave != nil {
		go e.m.onLeave(mem) // memberlist holds its lock
	}
}

func (m *Membership) set(n *memberlist.Node) {
	var meta MemberMeta
	_ = json.Unmarshal(n.Meta, &meta)
	mem := Member{Name: n.Name, GossipAddr: n.Address(), State: "alive", Meta: meta}
	m.mu.Lock()
	m.members[n.Name] = mem
	m.frontends = nil
	m.mu.Unlock()
}

// Frontends lists the gRPC addresses of the members that run an MQTT
// frontend, by member name. The list is kept until the membership changes
// (every CONNECT asks for it, to send its claims): callers must not modify
// it.
func (m *Membership) Frontends() []string {
	m.mu.RLock()
	out := m.frontends
	m.mu.RUnlock()
	if out != nil {
		return out
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.frontends != nil {
		return m.frontends
	}
	names := make([]string, 0, len(m.members))
	for name, mem := range m.members {
		if mem.Meta.MQTT && mem.Meta.GRPC != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	out = make([]string, len(names))
	for i, name := range names {
		out[i] = m.members[name].Meta.GRPC
	}
	m.frontends = out
	return out
}

// Stores lists live store members.
func (m *Membership) Stores() []Member {
	var out []Member
	for _, mem := range m.Members() {
		if mem.Meta.Role == RoleStore && mem.Meta.StoreID != 0 && mem.State != "dead" && mem.State != "left" {
			out = append(out, mem)
		}
	}
	return out
}

// Store returns a live store member by ID.
func (m *Membership) Store(id uint64) (Member, bool) {
	for _, mem := range m.Stores() {
		if mem.Meta.StoreID == id {
			return mem, true
		}
	}
	return Member{}, false
}

// UpdateMeta re-announces the local metadata.
func (m *Membership) UpdateMeta() {
	if err := m.ml.UpdateNode(time.Second); err != nil {
		m.log.Warn("gossip meta update", "err", err)
	}
}

// Close leaves the cluster and stops gossip.
func (m *Membership) Close() error {
	m.closeOnce.Do(func() { close(m.closed) })
	<-m.joinDone
	_ = m.ml.Leave(time.Second)
	return m.ml.Shutdown()
}

type delegate struct{ m *Membership }

func (d delegate) NodeMeta(limit int) []byte {
	b, _ := json.Marshal(d.m.meta())
	if len(b) > limit {
		return nil
	}
	return b
}
func (d delegate) NotifyMsg([]byte)                           {}
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d delegate) LocalState(join bool) []byte {
	if d.m.state == nil {
		return nil
	}
	return d.m.state()
}
func (d delegate) MergeRemoteState(buf []byte, join bool) {
	if d.m.merge != nil && len(buf) > 0 {
		d.m.merge(buf)
	}
}

// encodeRangeState and decodeRangeState are the gossip form of a store's ranges.
func encodeRangeState(infos []*rangespb.RangeInfo) []byte {
	b, _ := proto.Marshal(&rangespb.LocalRangesResponse{Ranges: infos})
	return b
}

func decodeRangeState(b []byte) []*rangespb.RangeInfo {
	var r rangespb.LocalRangesResponse
	if proto.Unmarshal(b, &r) != nil {
		return nil
	}
	return r.Ranges
}

// memberlistLog forwards memberlist's warnings and errors to slog.
type memberlistLog struct{ log *slog.Logger }

func (l *memberlistLog) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(s, "[ERR]"):
		l.log.Error(s, "component", "gossip")
	case strings.Contains(s, "[WARN]"):
		l.log.Warn(s, "component", "gossip")
	default:
		l.log.Debug(s, "component", "gossip")
	}
	return len(p), nil
}

var _ io.Writer = (*memberlistLog)(nil)
