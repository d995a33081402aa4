package retain

import (
	"bytes"
	"slices"
	"strings"
	"sync"
)

// Index is the in-memory tree of one range's retained topics, per tenant,
// for matching a subscription's filter. It is safe for concurrent use.
type Index struct {
	mu      sync.RWMutex
	tenants map[string]*tnode
	counts  map[string]int
}

type tnode struct {
	children map[string]*tnode
	present  bool
}

// NewIndex returns an empty index.
func NewIndex() *Index { return &Index{tenants: map[string]*tnode{}, counts: map[string]int{}} }

// Clear removes every topic.
func (x *Index) Clear() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.tenants, x.counts = map[string]*tnode{}, map[string]int{}
}

// replace takes over every topic of o at once, so that a concurrent match
// sees the old topics or the new ones, never a mix. o must not be used after.
func (x *Index) replace(o *Index) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.tenants, x.counts = o.tenants, o.counts
}

// TenantLen returns the number of retained topics of a tenant.
func (x *Index) TenantLen(tenant string) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.counts[tenant]
}

// Add records a retained topic; it reports false if it was there.
func (x *Index) Add(tenant, topic string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := x.tenants[tenant]
	if n == nil {
		n = &tnode{}
		x.tenants[tenant] = n
	}
	for _, l := range strings.Split(topic, "/") {
		if n.children == nil {
			n.children = map[string]*tnode{}
		}
		c := n.children[l]
		if c == nil {
			c = &tnode{}
			n.children[l] = c
		}
		n = c
	}
	if n.present {
		return false
	}
	n.present = true
	x.counts[tenant]++
	return true
}

// Remove forgets a retained topic; it reports false if it was not there.
func (x *Index) Remove(tenant, topic string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	root := x.tenants[tenant]
	if root == nil {
		return false
	}
	levels := strings.Split(topic, "/")
	path := []*tnode{root}
	n := root
	for _, l := range levels {
		if n = n.children[l]; n == nil {
			return false
		}
		path = append(path, n)
	}
	if !n.present {
		return false
	}
	n.present = false
	if x.counts[tenant]--; x.counts[tenant] == 0 {
		delete(x.counts, tenant)
	}
	for i := len(path) - 1; i > 0; i-- {
		if path[i].present || len(path[i].children) > 0 {
			break
		}
		delete(path[i-1].children, levels[i-1])
	}
	if len(root.children) == 0 {
		delete(x.tenants, tenant)
	}
	return true
}

// Match returns the retained topics a filter matches whose key part (the
// key after tenant 0x00, appendTopic) is from or after, in key order, at
// most limit (limit <= 0: all). A filter starting with a wildcard does not
// match topics starting with '$' (MQTT-4.7.2-1).
//
// Pages of a large match come from calls with from past the last key: the
// walk skips every subtree whose topics all key before from, so a page
// costs the matches left, not all of them.
func (x *Index) Match(tenant, filter, from string, limit int) []string {
	found := x.matchAll(tenant, filter, from)
	slices.SortFunc(found, func(a, b matchedTopic) int { return strings.Compare(a.key, b.key) })
	if limit > 0 && len(found) > limit {
		found = found[:limit]
	}
	out := make([]string, len(found))
	for i, mt := range found {
		out[i] = mt.topic
	}
	return out
}

// matchAll is Match's walk, unsorted.
func (x *Index) matchAll(tenant, filter, from string) []matchedTopic {
	x.mu.RLock()
	defer x.mu.RUnlock()
	root := x.tenants[tenant]
	if root == nil {
		return nil
	}
	m := indexMatch{levels: strings.Split(filter, "/"), from: []byte(from)}
	m.walk(root, 0)
	return m.out
}

type matchedTopic struct{ key, topic string }

// indexMatch is one walk of Match: path holds the topic of the node being
// visited.
type indexMatch struct {
	levels []string
	from   []byte
	path   []byte
	out    []matchedTopic
}

func (m *indexMatch) emit() {
	topic := string(m.path)
	key := topic
	if len(topic) > MaxTopicInKey {
		key = string(appendTopic(nil, topic))
	}
	if key >= string(m.from) {
		m.out = append(m.out, matchedTopic{key, topic})
	}
}

// enter appends a child at depth to the path; false when every topic at
// or under it keys before from. Every such topic starts with the path, and
// its key with the path's first MaxTopicInKey bytes.
func (m *indexMatch) enter(depth int, name string) bool {
	if depth > 0 {
		m.path = append(m.path, '/')
	}
	m.path = append(m.path, name...)
	p := m.path[:min(len(m.path), MaxTopicInKey)]
	return bytes.Compare(p, m.from) >= 0 || bytes.HasPrefix(m.from, p)
}

func (m *indexMatch) walk(n *tnode, i int) {
	if i == len(m.levels) {
		if n.present {
			m.emit()
		}
		return
	}
	mark := len(m.path)
	switch l := m.levels[i]; l {
	case "#":
		if i > 0 && n.present { // "a/#" matches "a"
			m.emit()
		}
		for name, c := range n.children {
			if i == 0 && strings.HasPrefix(name, "$") {
				continue
			}
			if m.enter(i, name) {
				m.descend(c, i+1)
			}
			m.path = m.path[:mark]
		}
	case "+":
		for name, c := range n.children {
			if i == 0 && strings.HasPrefix(name, "$") {
				continue
			}
			if m.enter(i, name) {
				m.walk(c, i+1)
			}
			m.path = m.path[:mark]
		}
	default:
		if c := n.children[l]; c != nil {
			if m.enter(i, l) {
				m.walk(c, i+1)
			}
			m.path = m.path[:mark]
		}
	}
}

// descend emits every topic at or under n, whose children are at depth.
func (m *indexMatch) descend(n *tnode, depth int) {
	if n.present {
		m.emit()
	}
	mark := len(m.path)
	for name, c := range n.children {
		if m.enter(depth, name) {
			m.descend(c, depth+1)
		}
		m.path = m.path[:mark]
	}
}
