package auth

import (
	"container/list"
	"sync"
	"time"
)

// decisionKey is what a cached permission decision is for. The client ID
// is part of it only for an anonymous client, whose username says nothing.
type decisionKey struct {
	tenant, user, anonClientID string
	action                     Action
	topic                      string
	qos                        byte
	retain                     bool
}

func keyOf(id Identity, r Request) decisionKey {
	k := decisionKey{tenant: id.Tenant, user: id.Username, action: r.Action, topic: r.Topic, qos: r.QoS, retain: r.Retain}
	if id.Username == "" {
		k.anonClientID = id.ClientID
	}
	return k
}

type decision struct {
	key     decisionKey
	allow   bool
	expires time.Time
}

// decisionCache keeps at most size decisions for ttl each, evicting the
// least recently used. Safe for concurrent use.
type decisionCache struct {
	ttl  time.Duration
	size int
	now  func() time.Time

	mu    sync.Mutex
	order *list.List // of *decision, most recently used first
	byKey map[decisionKey]*list.Element
}

func newDecisionCache(size int, ttl time.Duration) *decisionCache {
	return &decisionCache{ttl: ttl, size: size, now: time.Now, order: list.New(), byKey: map[decisionKey]*list.Element{}}
}

func (c *decisionCache) get(k decisionKey) (allow, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byKey[k]
	if e == nil {
		return false, false
	}
	d := e.Value.(*decision)
	if !c.now().Before(d.expires) {
		c.order.Remove(e)
		delete(c.byKey, k)
		return false, false
	}
	c.order.MoveToFront(e)
	return d.allow, true
}

func (c *decisionCache) put(k decisionKey, allow bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp := c.now().Add(c.ttl)
	if e := c.byKey[k]; e != nil {
		d := e.Value.(*decision)
		d.allow, d.expires = allow, exp
		c.order.MoveToFront(e)
		return
	}
	c.byKey[k] = c.order.PushFront(&decision{key: k, allow: allow, expires: exp})
	for c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*decision).key)
	}
}

func (c *decisionCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
