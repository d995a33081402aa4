package ui

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/bifrost-mq/bifrost/api"
)

// Source is what the status page reads: the facts of the cluster as one
// process sees them. Everything derived (per-store counts, keyspace totals,
// missing stores, message rates) is the handler's.
type Source interface {
	// Snapshot returns the current facts. Parts that could not be read are
	// left out and named in Snapshot.Errors; an error means nothing could.
	Snapshot(ctx context.Context) (*Snapshot, error)
}

// Snapshot is one reading of a Source.
type Snapshot struct {
	// Node is the name of the process serving the page.
	Node string
	// Members are the live gossip members (Health "alive").
	Members []Member
	// Ranges are every range the process knows, by keyspace and start key.
	Ranges []Range
	// Frontends are the MQTT frontends' figures, one sample each.
	Frontends []FrontendSample
	// Errors name the parts that could not be read.
	Errors []string
}

// FrontendSample is one frontend's figures at one time. A figure the
// source has no value for is nil.
type FrontendSample struct {
	Name string
	// Sessions is the number of connected MQTT sessions (past CONNACK).
	Sessions *int64
	// In counts messages clients published to it; Out messages it
	// delivered to clients.
	In, Out *uint64
	// At is when the figures were taken.
	At time.Time
	// From says where they come from: "metrics" (this process's Prometheus
	// registry) or "$SYS" (the frontend's retained $SYS topics).
	From string
}

// Status is the JSON document at /api/v1/status: everything the page shows.
type Status struct {
	Node            string     `json:"node"`
	GeneratedUnixMs int64      `json:"generated_unix_ms"`
	Members         []Member   `json:"members"`
	Keyspaces       []Keyspace `json:"keyspaces"`
	Ranges          []Range    `json:"ranges"`
	Frontends       []Frontend `json:"frontends"`
	// Totals over the frontends whose figures are known.
	Totals Totals   `json:"totals"`
	Errors []string `json:"errors"`
}

// Member is a process of the cluster. Health is "alive" for a gossip member
// and "missing" for a store that ranges name as a replica's home but gossip
// does not list (down, or cut off from this process).
type Member struct {
	Name     string  `json:"name"`
	Role     string  `json:"role"`
	StoreID  StoreID `json:"store_id,omitempty"`
	MQTT     bool    `json:"mqtt"`
	Gossip   string  `json:"gossip,omitempty"`
	GRPC     string  `json:"grpc,omitempty"`
	Raft     string  `json:"raft,omitempty"`
	Health   string  `json:"health"`
	Replicas int     `json:"replicas"`
	Leaders  int     `json:"leaders"`
	// Bytes is the approximate size of the ranges it holds a replica of.
	Bytes uint64 `json:"bytes"`
}

// Range is one range. Start and End are the keys as text when they are
// printable, else 0x-hex; End "" is the end of the keyspace. Leader is the
// store of the leader replica, absent when unknown.
type Range struct {
	ID       uint64    `json:"id"`
	Keyspace string    `json:"keyspace"`
	Start    string    `json:"start"`
	End      string    `json:"end"`
	Ver      uint64    `json:"ver"`
	ConfVer  uint64    `json:"conf_ver"`
	Replicas []StoreID `json:"replicas"`
	Leader   StoreID   `json:"leader,omitempty"`
	State    string    `json:"state"`
	Size     uint64    `json:"size"`
	// SizeKnown is false until a store reported the range's size.
	SizeKnown bool `json:"size_known"`
}

// StoreID is a store's ID, a decimal string in JSON (api.StoreID).
type StoreID = api.StoreID

// Keyspace sums a keyspace's ranges.
type Keyspace struct {
	Name   string `json:"name"`
	Ranges int    `json:"ranges"`
	Bytes  uint64 `json:"bytes"`
	// Leaderless counts ranges with no known leader; Degraded ranges with a
	// replica on a missing store.
	Leaderless int `json:"leaderless"`
	Degraded   int `json:"degraded"`
}

// Frontend is an MQTT frontend's figures. A figure not known is null: the
// frontend publishes no $SYS topics (-mqtt-sys-interval 0) or has not yet;
// a rate needs two samples of its counters.
type Frontend struct {
	Name          string   `json:"name"`
	Sessions      *int64   `json:"sessions"`
	MessagesIn    *uint64  `json:"messages_in"`
	MessagesOut   *uint64  `json:"messages_out"`
	InPerSec      *float64 `json:"in_per_sec"`
	OutPerSec     *float64 `json:"out_per_sec"`
	SampledUnixMs int64    `json:"sampled_unix_ms,omitempty"`
	From          string   `json:"from,omitempty"`
}

// Totals are sums over the frontends.
type Totals struct {
	Sessions  int64   `json:"sessions"`
	InPerSec  float64 `json:"in_per_sec"`
	OutPerSec float64 `json:"out_per_sec"`
}

// status derives the page's document from a snapshot.
func status(s *Snapshot, r *rates, now time.Time) *Status {
	out := &Status{Node: s.Node, GeneratedUnixMs: now.UnixMilli(), Members: []Member{}, Keyspaces: []Keyspace{},
		Ranges: []Range{}, Frontends: []Frontend{}, Errors: []string{}}
	out.Errors = append(out.Errors, s.Errors...)
	out.Ranges = append(out.Ranges, s.Ranges...)

	out.Members = append(out.Members, s.Members...)
	storeIdx := map[StoreID]int{} // store ID -> index in out.Members
	for i, m := range out.Members {
		if m.StoreID != 0 {
			storeIdx[m.StoreID] = i
		}
	}
	ksIdx := map[string]int{}
	for _, rg := range s.Ranges {
		k, ok := ksIdx[rg.Keyspace]
		if !ok {
			k = len(out.Keyspaces)
			ksIdx[rg.Keyspace] = k
			out.Keyspaces = append(out.Keyspaces, Keyspace{Name: rg.Keyspace})
		}
		ks := &out.Keyspaces[k]
		ks.Ranges++
		ks.Bytes += rg.Size
		if rg.Leader == 0 {
			ks.Leaderless++
		}
		degraded := false
		for _, id := range rg.Replicas {
			i, ok := storeIdx[id]
			if !ok {
				i = len(out.Members)
				storeIdx[id] = i
				out.Members = append(out.Members, Member{Name: "store " + strconv.FormatUint(uint64(id), 10), Role: "store", StoreID: id, Health: "missing"})
			}
			m := &out.Members[i]
			degraded = degraded || m.Health == "missing"
			m.Replicas++
			m.Bytes += rg.Size
			if id == rg.Leader {
				m.Leaders++
			}
		}
		if degraded {
			ks.Degraded++
		}
	}
	sort.SliceStable(out.Members, func(i, j int) bool { return out.Members[i].Name < out.Members[j].Name })

	for _, f := range s.Frontends {
		fe := Frontend{Name: f.Name, Sessions: f.Sessions, MessagesIn: f.In, MessagesOut: f.Out, From: f.From}
		if !f.At.IsZero() {
			fe.SampledUnixMs = f.At.UnixMilli()
		}
		if f.In != nil && f.Out != nil {
			if in, outRate, ok := r.observe(f.Name, f.At, *f.In, *f.Out, now); ok {
				fe.InPerSec, fe.OutPerSec = &in, &outRate
				out.Totals.InPerSec += in
				out.Totals.OutPerSec += outRate
			}
		}
		if f.Sessions != nil {
			out.Totals.Sessions += *f.Sessions
		}
		out.Frontends = append(out.Frontends, fe)
	}
	sort.Slice(out.Frontends, func(i, j int) bool { return out.Frontends[i].Name < out.Frontends[j].Name })
	r.forget(now)
	return out
}

// rateGap is the least time between two samples a rate is computed over.
const rateGap = time.Second

// rateMemory is how long a frontend's samples are kept after it was last
// seen.
const rateMemory = 10 * time.Minute

// rates turns counter samples into per-second rates: per frontend, the rate
// between the two latest samples at least rateGap apart. A counter that went
// down (the frontend restarted) starts over.
type rates struct {
	mu   sync.Mutex
	byFE map[string]*counterHistory
}

type counterSample struct {
	at      time.Time
	in, out uint64
}

type counterHistory struct {
	prev, last counterSample
	hasPrev    bool
	seen       time.Time
}

func newRates() *rates { return &rates{byFE: map[string]*counterHistory{}} }

// observe records a sample of a frontend's counters taken at at and returns
// its rates, ok false while there is no pair of samples.
func (r *rates) observe(name string, at time.Time, in, out uint64, now time.Time) (inRate, outRate float64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.byFE[name]
	s := counterSample{at: at, in: in, out: out}
	switch {
	case h == nil:
		h = &counterHistory{last: s}
		r.byFE[name] = h
	case in < h.last.in || out < h.last.out:
		*h = counterHistory{last: s}
	case at.Sub(h.last.at) >= rateGap:
		h.prev, h.last, h.hasPrev = h.last, s, true
	}
	h.seen = now
	if !h.hasPrev {
		return 0, 0, false
	}
	dt := h.last.at.Sub(h.prev.at).Seconds()
	return float64(h.last.in-h.prev.in) / dt, float64(h.last.out-h.prev.out) / dt, true
}

// forget drops the samples of frontends not seen for rateMemory.
func (r *rates) forget(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, h := range r.byFE {
		if now.Sub(h.seen) > rateMemory {
			delete(r.byFE, name)
		}
	}
}
