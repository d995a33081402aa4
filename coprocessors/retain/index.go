package retain

import (
	"sort"
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

// Match returns the retained topics a filter matches, sorted, at most limit
// (limit <= 0: all). A filter starting with a wildcard does not match topics
// starting with '$' (MQTT-4.7.2-1).
func (x *Index) Match(tenant, filter string, limit int) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	root := x.tenants[tenant]
	if root == nil {
		return nil
	}
	var out []string
	levels := strings.Split(filter, "/")
	var walk func(n *tnode, i int, path []string)
	walk = func(n *tnode, i int, path []string) {
		if i == len(levels) {
			if n.present {
				out = append(out, strings.Join(path, "/"))
			}
			return
		}
		switch l := levels[i]; l {
		case "#":
			if i > 0 && n.present { // "a/#" matches "a"
				out = append(out, strings.Join(path, "/"))
			}
			for name, c := range n.children {
				if i == 0 && strings.HasPrefix(name, "$") {
					continue
				}
				descend(c, append(path, name), &out)
			}
		case "+":
			for name, c := range n.children {
				if i == 0 && strings.HasPrefix(name, "$") {
					continue
				}
				walk(c, i+1, append(path, name))
			}
		default:
			if c := n.children[l]; c != nil {
				walk(c, i+1, append(path, l))
			}
		}
	}
	walk(root, 0, nil)
	sort.Strings(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func descend(n *tnode, path []string, out *[]string) {
	if n.present {
		*out = append(*out, strings.Join(path, "/"))
	}
	for name, c := range n.children {
		descend(c, append(path, name), out)
	}
}
