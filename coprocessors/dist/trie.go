package dist

import (
	"hash/fnv"
	"slices"
	"strings"
	"sync"
)

// Receiver is where matched messages go: a frontend's transient sessions or
// a persistent inbox. Kind tells which; ID names it.
type Receiver struct {
	Kind byte
	ID   string
}

func (r Receiver) less(o Receiver) bool {
	if r.Kind != o.Kind {
		return r.Kind < o.Kind
	}
	return r.ID < o.ID
}

// Matched is one receiver of a message and the subscription that matched.
type Matched struct {
	Receiver Receiver
	Sub      Subscription
}

// Trie is the in-memory routing index of one range: per tenant, a tree of
// filter levels. It is safe for concurrent use.
type Trie struct {
	mu      sync.RWMutex
	tenants map[string]*node
	counts  map[string]int
	routes  int
}

type node struct {
	children map[string]*node
	// plain holds the receivers of the plain filter that ends here.
	plain map[Receiver]struct{}
	// groups holds the shared groups of the filter that ends here.
	groups map[groupKey]*group
}

type groupKey struct {
	name    string
	ordered bool
}

type group struct {
	members []Receiver // sorted, so a choice is the same on every replica
}

// NewTrie returns an empty trie.
func NewTrie() *Trie { return &Trie{tenants: map[string]*node{}, counts: map[string]int{}} }

// TenantLen returns the number of routes of one tenant.
func (t *Trie) TenantLen(tenant string) int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.counts[tenant]
}

// Clear removes every route.
func (t *Trie) Clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tenants, t.counts, t.routes = map[string]*node{}, map[string]int{}, 0
}

// replace takes over every route of o at once, so that a concurrent match
// sees the old routes or the new ones, never a mix. o must not be used after.
func (t *Trie) replace(o *Trie) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tenants, t.counts, t.routes = o.tenants, o.counts, o.routes
}

// Len returns the number of routes.
func (t *Trie) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.routes
}

// Add inserts a route; it reports false if the route was there already.
func (t *Trie) Add(tenant string, sub Subscription, r Receiver) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	root := t.tenants[tenant]
	if root == nil {
		root = &node{}
		t.tenants[tenant] = root
	}
	n := root
	for _, l := range strings.Split(sub.Filter, "/") {
		if n.children == nil {
			n.children = map[string]*node{}
		}
		c := n.children[l]
		if c == nil {
			c = &node{}
			n.children[l] = c
		}
		n = c
	}
	if sub.Group == "" {
		if n.plain == nil {
			n.plain = map[Receiver]struct{}{}
		}
		if _, ok := n.plain[r]; ok {
			return false
		}
		n.plain[r] = struct{}{}
		t.routes++
		t.counts[tenant]++
		return true
	}
	if n.groups == nil {
		n.groups = map[groupKey]*group{}
	}
	k := groupKey{sub.Group, sub.Ordered}
	g := n.groups[k]
	if g == nil {
		g = &group{}
		n.groups[k] = g
	}
	i, found := slices.BinarySearchFunc(g.members, r, func(a, b Receiver) int {
		if a == b {
			return 0
		}
		if a.less(b) {
			return -1
		}
		return 1
	})
	if found {
		return false
	}
	g.members = slices.Insert(g.members, i, r)
	t.routes++
	t.counts[tenant]++
	return true
}

// Remove deletes a route; it reports false if there was none.
func (t *Trie) Remove(tenant string, sub Subscription, r Receiver) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	root := t.tenants[tenant]
	if root == nil {
		return false
	}
	levels := strings.Split(sub.Filter, "/")
	path := make([]*node, 0, len(levels)+1)
	path = append(path, root)
	n := root
	for _, l := range levels {
		n = n.children[l]
		if n == nil {
			return false
		}
		path = append(path, n)
	}
	removed := false
	if sub.Group == "" {
		if _, ok := n.plain[r]; ok {
			delete(n.plain, r)
			removed = true
		}
	} else if g := n.groups[groupKey{sub.Group, sub.Ordered}]; g != nil {
		if i := slices.Index(g.members, r); i >= 0 {
			g.members = slices.Delete(g.members, i, i+1)
			removed = true
			if len(g.members) == 0 {
				delete(n.groups, groupKey{sub.Group, sub.Ordered})
			}
		}
	}
	if !removed {
		return false
	}
	t.routes--
	if t.counts[tenant]--; t.counts[tenant] == 0 {
		delete(t.counts, tenant)
	}
	// Prune nodes left empty, from the leaf up.
	for i := len(path) - 1; i > 0; i-- {
		c := path[i]
		if len(c.children) > 0 || len(c.plain) > 0 || len(c.groups) > 0 {
			break
		}
		delete(path[i-1].children, levels[i-1])
	}
	if len(root.children) == 0 {
		delete(t.tenants, tenant)
	}
	return true
}

// Match returns the receivers of a message published to topic by publisher:
// every plain route whose filter matches, and one member of every shared
// group whose filter matches. A $share group picks by seed (vary it per
// message to spread load); a $oshare group picks by publisher, so one
// publisher's messages stay in order at one member. A receiver matched by
// several filters appears once per filter; callers merge by receiver.
func (t *Trie) Match(tenant, topic, publisher string, seed uint64) []Matched {
	t.mu.RLock()
	defer t.mu.RUnlock()
	root := t.tenants[tenant]
	if root == nil {
		return nil
	}
	m := matcher{levels: strings.Split(topic, "/"), publisher: publisher, seed: seed}
	m.walk(root, 0, nil, strings.HasPrefix(topic, "$"))
	return m.out
}

type matcher struct {
	levels    []string
	publisher string
	seed      uint64
	out       []Matched
}

func (m *matcher) walk(n *node, depth int, filter []string, dollar bool) {
	if depth == len(m.levels) {
		m.collect(n, filter)
		// "a/#" also matches "a" (MQTT-4.7.1-1's parent rule).
		if c := n.children["#"]; c != nil {
			m.collect(c, append(filter, "#"))
		}
		return
	}
	// MQTT-4.7.2-1: no leading wildcard matches a $-topic.
	wild := !(depth == 0 && dollar)
	if wild {
		if c := n.children["#"]; c != nil {
			m.collect(c, append(filter, "#"))
		}
		if c := n.children["+"]; c != nil {
			m.walk(c, depth+1, append(filter, "+"), dollar)
		}
	}
	if l := m.levels[depth]; l != "+" && l != "#" {
		if c := n.children[l]; c != nil {
			m.walk(c, depth+1, append(filter, l), dollar)
		}
	}
}

func (m *matcher) collect(n *node, filter []string) {
	if len(n.plain) == 0 && len(n.groups) == 0 {
		return
	}
	f := strings.Join(filter, "/")
	for r := range n.plain {
		m.out = append(m.out, Matched{Receiver: r, Sub: Subscription{Filter: f}})
	}
	for k, g := range n.groups {
		var pick uint64
		if k.ordered {
			h := fnv.New64a()
			h.Write([]byte(m.publisher))
			pick = h.Sum64()
		} else {
			pick = m.seed
		}
		r := g.members[pick%uint64(len(g.members))]
		m.out = append(m.out, Matched{Receiver: r, Sub: Subscription{Filter: f, Group: k.name, Ordered: k.ordered}})
	}
}
