// Package fanout is a frontend's index of its transient sessions'
// subscriptions: the pure core between dist and the sessions.
//
// A frontend registers one dist route per (tenant, subscription) for all of
// its sessions, so a popular filter costs one route however many clients use
// it; Subscribe and Unsubscribe say when the first session subscribes and the
// last one leaves, which is when the route must be added or removed. When a
// message arrives for the frontend, Deliveries resolves it to sessions:
// each session once, at the highest QoS of its matching subscriptions
// (MQTT-3.3.4-2 allows one copy per session), with every matching
// subscription identifier (MQTT-3.3.4-3), without sessions that subscribed
// with no-local to a message they published (MQTT-3.8.3-3), and with one
// member of each shared group.
package fanout

import (
	"hash/fnv"
	"slices"
	"strings"
	"sync"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
)

// Options are a session's options for one subscription.
type Options struct {
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	// SubscriptionID is the MQTT 5 subscription identifier; 0: none.
	SubscriptionID uint32
}

// Delivery is one session to deliver a message to.
type Delivery struct {
	Session string
	// QoS is the highest QoS of the session's matching subscriptions; the
	// caller caps it at the message's QoS.
	QoS byte
	// RetainAsPublished is set if any matching subscription asked for it.
	RetainAsPublished bool
	// SubscriptionIDs of every matching subscription, ascending.
	SubscriptionIDs []uint32
}

type subKey struct {
	tenant string
	sub    string // as the client wrote it
}

// Index is safe for concurrent use.
type Index struct {
	mu   sync.RWMutex
	trie *dist.Trie
	// opts holds each session's options per subscription.
	opts map[subKey]map[string]Options
}

// New returns an empty index.
func New() *Index {
	return &Index{trie: dist.NewTrie(), opts: map[subKey]map[string]Options{}}
}

// Subscribe records a session's subscription (replacing its options if it
// had it). first reports that no other session of this frontend had the
// subscription: the frontend must add its dist route.
func (x *Index) Subscribe(tenant, session string, sub dist.Subscription, o Options) (first bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := subKey{tenant, sub.String()}
	m := x.opts[k]
	if m == nil {
		m = map[string]Options{}
		x.opts[k] = m
	}
	first = len(m) == 0
	m[session] = o
	x.trie.Add(tenant, sub, dist.Receiver{Kind: 1, ID: session})
	return first
}

// Unsubscribe removes a session's subscription. last reports that no
// session of this frontend has it any more: the frontend must remove its
// dist route. found is false if the session did not have it.
func (x *Index) Unsubscribe(tenant, session string, sub dist.Subscription) (found, last bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := subKey{tenant, sub.String()}
	m := x.opts[k]
	if _, ok := m[session]; !ok {
		return false, false
	}
	delete(m, session)
	x.trie.Remove(tenant, sub, dist.Receiver{Kind: 1, ID: session})
	if len(m) == 0 {
		delete(x.opts, k)
		return true, true
	}
	return true, false
}

// Has reports whether any session of this frontend holds the subscription.
func (x *Index) Has(tenant string, sub dist.Subscription) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.opts[subKey{tenant, sub.String()}]) > 0
}

// Deliveries resolves a message published by publisher (a session ID, or ""
// for none) to topic into the sessions that get it. seed picks shared
// group members.
func (x *Index) Deliveries(tenant, topic, publisher string, seed uint64) []Delivery {
	x.mu.RLock()
	defer x.mu.RUnlock()
	byID := map[string]*Delivery{}
	var order []string
	for _, m := range x.trie.Match(tenant, topic, publisher, seed) {
		o, ok := x.opts[subKey{tenant, m.Sub.String()}][m.Receiver.ID]
		if !ok {
			continue
		}
		if o.NoLocal && m.Receiver.ID == publisher && m.Sub.Group == "" {
			continue // MQTT-3.8.3-3 (not for shared subscriptions: MQTT-3.8.3-4 forbids the combination)
		}
		d := byID[m.Receiver.ID]
		if d == nil {
			d = &Delivery{Session: m.Receiver.ID}
			byID[m.Receiver.ID] = d
			order = append(order, m.Receiver.ID)
		}
		d.QoS = max(d.QoS, o.QoS)
		d.RetainAsPublished = d.RetainAsPublished || o.RetainAsPublished
		if o.SubscriptionID != 0 && !slices.Contains(d.SubscriptionIDs, o.SubscriptionID) {
			d.SubscriptionIDs = append(d.SubscriptionIDs, o.SubscriptionID)
		}
	}
	slices.Sort(order)
	out := make([]Delivery, 0, len(order))
	for _, id := range order {
		d := byID[id]
		slices.Sort(d.SubscriptionIDs)
		out = append(out, *d)
	}
	return out
}

// RemoveSession drops every subscription of a session and returns the
// subscriptions no session of this frontend holds any more (their routes
// must go).
func (x *Index) RemoveSession(tenant, session string, subs []dist.Subscription) (orphaned []dist.Subscription) {
	for _, s := range subs {
		if found, last := x.Unsubscribe(tenant, session, s); found && last {
			orphaned = append(orphaned, s)
		}
	}
	return orphaned
}

// DeliveriesFor resolves a message to the sessions behind the given
// subscriptions only: the routes dist matched for this frontend. Shared
// subscriptions deliver to one member session: by seed for $share, by
// publisher for $oshare. gone lists the subscriptions no session holds any
// more (their routes are stale).
func (x *Index) DeliveriesFor(tenant, publisher string, seed uint64, subs []string) (out []Delivery, gone []string) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var byID map[string]int
	add := func(session string, o Options) {
		if byID == nil {
			byID = map[string]int{}
		}
		i, ok := byID[session]
		if !ok {
			i = len(out)
			byID[session] = i
			out = append(out, Delivery{Session: session})
		}
		d := &out[i]
		d.QoS = max(d.QoS, o.QoS)
		d.RetainAsPublished = d.RetainAsPublished || o.RetainAsPublished
		if o.SubscriptionID != 0 && !slices.Contains(d.SubscriptionIDs, o.SubscriptionID) {
			d.SubscriptionIDs = append(d.SubscriptionIDs, o.SubscriptionID)
		}
	}
	for _, sub := range subs {
		m := x.opts[subKey{tenant, sub}]
		if len(m) == 0 {
			gone = append(gone, sub)
			continue
		}
		shared, ordered := strings.HasPrefix(sub, "$share/"), strings.HasPrefix(sub, "$oshare/")
		if !shared && !ordered {
			for session, o := range m {
				if o.NoLocal && session == publisher {
					continue // MQTT-3.8.3-3
				}
				add(session, o)
			}
			continue
		}
		members := make([]string, 0, len(m))
		for session := range m {
			members = append(members, session)
		}
		slices.Sort(members)
		pick := seed
		if ordered {
			h := fnv.New64a()
			h.Write([]byte(publisher))
			pick = h.Sum64()
		}
		session := members[pick%uint64(len(members))]
		add(session, m[session])
	}
	for i := range out {
		slices.Sort(out[i].SubscriptionIDs)
	}
	return out, gone
}
