package dist

import (
	"fmt"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestMatchFilterRules(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		// MQTT 4.7.1.2: multi-level wildcard.
		{"sport/tennis/player1/#", "sport/tennis/player1", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
		{"sport/#", "sport", true},
		{"#", "sport/tennis", true},
		{"#", "/", true},
		// MQTT 4.7.1.3: single-level wildcard.
		{"sport/tennis/+", "sport/tennis/player1", true},
		{"sport/tennis/+", "sport/tennis/player1/ranking", false},
		{"sport/+", "sport", false},
		{"sport/+", "sport/", true},
		{"+/+", "/finance", true},
		{"/+", "/finance", true},
		{"+", "/finance", false},
		{"+/tennis/#", "sport/tennis/player1", true},
		// Levels are exact and case sensitive; empty levels count.
		{"a/b", "a/b", true},
		{"a/b", "A/b", false},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
		{"a/b", "a/b/", false},
		// MQTT 4.7.2: $-topics and leading wildcards.
		{"#", "$SYS/broker", false},
		{"+/monitor/Clients", "$SYS/monitor/Clients", false},
		{"$SYS/#", "$SYS/monitor/Clients", true},
		{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
		{"a/#", "a/$b", true},
	}
	for _, tc := range tests {
		if got := MatchFilter(tc.filter, tc.topic); got != tc.want {
			t.Errorf("MatchFilter(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
		tr := NewTrie()
		tr.Add("t", Subscription{Filter: tc.filter}, Receiver{1, "r"})
		if got := len(tr.Match("t", tc.topic, "p", 0)) == 1; got != tc.want {
			t.Errorf("trie: filter %q topic %q matched %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestValidation(t *testing.T) {
	badFilters := map[string]error{
		"":            ErrEmptyTopic,
		"a/#/b":       ErrBadMultiLevel,
		"a#":          ErrBadMultiLevel,
		"a/b+":        ErrBadSingleLevel,
		"a/\x00":      ErrNullInTopic,
		"$share/g":    ErrBadShare,
		"$share//a":   ErrBadShare,
		"$share/g+/a": ErrBadShare,
		"$oshare/g/":  ErrBadShare,
	}
	for f, want := range badFilters {
		if _, err := ParseSubscription(f); err != want {
			t.Errorf("ParseSubscription(%q) = %v, want %v", f, err, want)
		}
	}
	for _, f := range []string{"a", "#", "+", "a/+/#", "/", "$share/g/a/#", "$oshare/g/+"} {
		if _, err := ParseSubscription(f); err != nil {
			t.Errorf("ParseSubscription(%q): %v", f, err)
		}
	}
	s, _ := ParseSubscription("$oshare/grp/a/+")
	if s.Filter != "a/+" || s.Group != "grp" || !s.Ordered || s.String() != "$oshare/grp/a/+" {
		t.Errorf("parsed %+v", s)
	}
	for topic, want := range map[string]error{"": ErrEmptyTopic, "a/+": ErrWildcardInName, "#": ErrWildcardInName, "a\x00": ErrNullInTopic} {
		if err := ValidateTopicName(topic); err != want {
			t.Errorf("ValidateTopicName(%q) = %v, want %v", topic, err, want)
		}
	}
}

func TestSharedGroups(t *testing.T) {
	tr := NewTrie()
	members := []Receiver{{1, "a"}, {1, "b"}, {1, "c"}}
	for _, m := range members {
		tr.Add("t", Subscription{Filter: "x/+", Group: "g"}, m)
		tr.Add("t", Subscription{Filter: "x/+", Group: "o", Ordered: true}, m)
	}
	tr.Add("t", Subscription{Filter: "x/#"}, Receiver{2, "plain"})
	seen := map[Receiver]int{}
	for seed := uint64(0); seed < 300; seed++ {
		got := tr.Match("t", "x/y", "pub-1", seed)
		if len(got) != 3 {
			t.Fatalf("want one plain, one $share and one $oshare receiver, got %v", got)
		}
		for _, m := range got {
			if m.Sub.Group == "g" {
				seen[m.Receiver]++
			}
		}
	}
	if len(seen) != 3 {
		t.Errorf("$share spread over %d members, want all 3: %v", len(seen), seen)
	}
	// $oshare: the same member for the same publisher, whatever the seed.
	var first Receiver
	for seed := uint64(0); seed < 50; seed++ {
		for _, m := range tr.Match("t", "x/y", "pub-1", seed) {
			if m.Sub.Ordered {
				if seed == 0 {
					first = m.Receiver
				} else if m.Receiver != first {
					t.Fatalf("$oshare moved from %v to %v for one publisher", first, m.Receiver)
				}
			}
		}
	}
	if !tr.Remove("t", Subscription{Filter: "x/+", Group: "g"}, members[0]) || tr.Remove("t", Subscription{Filter: "x/+", Group: "g"}, members[0]) {
		t.Fatal("remove should succeed once")
	}
}

func TestRemovePrunesAndCounts(t *testing.T) {
	tr := NewTrie()
	r := Receiver{1, "r"}
	if !tr.Add("t", Subscription{Filter: "a/b/c"}, r) || tr.Add("t", Subscription{Filter: "a/b/c"}, r) {
		t.Fatal("add should succeed once")
	}
	tr.Add("t", Subscription{Filter: "a/b"}, r)
	tr.Remove("t", Subscription{Filter: "a/b/c"}, r)
	if tr.Len() != 1 || len(tr.Match("t", "a/b", "", 0)) != 1 || len(tr.Match("t", "a/b/c", "", 0)) != 0 {
		t.Fatalf("after remove: len %d", tr.Len())
	}
	tr.Remove("t", Subscription{Filter: "a/b"}, r)
	if tr.Len() != 0 || len(tr.tenants) != 0 {
		t.Fatalf("empty trie keeps %d tenants", len(tr.tenants))
	}
}

type route struct {
	tenant string
	sub    Subscription
	r      Receiver
}

// bruteForce is the oracle: every route checked with MatchFilter.
func bruteForce(routes []route, tenant, topic string) (plain []string, groups []string) {
	for _, rt := range routes {
		if rt.tenant != tenant || !MatchFilter(rt.sub.Filter, topic) {
			continue
		}
		if rt.sub.Group == "" {
			plain = append(plain, rt.sub.Filter+"|"+rt.r.ID)
		} else {
			groups = append(groups, rt.sub.String())
		}
	}
	sort.Strings(plain)
	groups = slices.Compact(sortStrings(groups))
	return plain, groups
}

func sortStrings(s []string) []string { sort.Strings(s); return s }

func checkAgainstOracle(t *testing.T, tr *Trie, routes []route, tenant, topic string) {
	t.Helper()
	wantPlain, wantGroups := bruteForce(routes, tenant, topic)
	var gotPlain, gotGroups []string
	for _, m := range tr.Match(tenant, topic, "pub", 7) {
		if m.Sub.Group == "" {
			gotPlain = append(gotPlain, m.Sub.Filter+"|"+m.Receiver.ID)
			continue
		}
		gotGroups = append(gotGroups, m.Sub.String())
		member := false
		for _, rt := range routes {
			if rt.tenant == tenant && rt.sub == m.Sub && rt.r == m.Receiver {
				member = true
			}
		}
		if !member {
			t.Fatalf("topic %q: %v is not a member of %s", topic, m.Receiver, m.Sub)
		}
	}
	sort.Strings(gotPlain)
	sort.Strings(gotGroups)
	if !slices.Equal(gotPlain, wantPlain) {
		t.Fatalf("topic %q: plain %v, oracle %v", topic, gotPlain, wantPlain)
	}
	if !slices.Equal(gotGroups, wantGroups) {
		t.Fatalf("topic %q: groups %v (one member each), oracle %v", topic, gotGroups, wantGroups)
	}
}

var levelAlphabet = []string{"a", "b", "", "$s", "+", "#"}

func randomFilter(rng *rand.Rand) string {
	n := 1 + rng.Intn(4)
	var ls []string
	for i := 0; i < n; i++ {
		l := levelAlphabet[rng.Intn(len(levelAlphabet))]
		if l == "#" {
			ls = append(ls, l)
			break
		}
		ls = append(ls, l)
	}
	return strings.Join(ls, "/")
}

func randomTopic(rng *rand.Rand) string {
	n := 1 + rng.Intn(4)
	var ls []string
	for i := 0; i < n; i++ {
		ls = append(ls, levelAlphabet[rng.Intn(4)])
	}
	return strings.Join(ls, "/")
}

func TestTrieAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewSource(42))
	tr := NewTrie()
	var routes []route
	for i := 0; i < 2000; i++ {
		sub := Subscription{Filter: randomFilter(rng)}
		if rng.Intn(4) == 0 {
			sub.Group = []string{"g1", "g2"}[rng.Intn(2)]
			sub.Ordered = rng.Intn(2) == 0
		}
		rt := route{tenant: []string{"t1", "t2"}[rng.Intn(2)], sub: sub, r: Receiver{1, fmt.Sprint(rng.Intn(20))}}
		if rng.Intn(5) == 0 && len(routes) > 0 {
			victim := routes[rng.Intn(len(routes))]
			tr.Remove(victim.tenant, victim.sub, victim.r)
			routes = slices.DeleteFunc(routes, func(x route) bool { return x == victim })
			continue
		}
		if tr.Add(rt.tenant, rt.sub, rt.r) {
			routes = append(routes, rt)
		}
	}
	if tr.Len() != len(routes) {
		t.Fatalf("trie holds %d routes, oracle %d", tr.Len(), len(routes))
	}
	for i := 0; i < 2000; i++ {
		checkAgainstOracle(t, tr, routes, []string{"t1", "t2"}[rng.Intn(2)], randomTopic(rng))
	}
}

// FuzzTrieMatch checks the trie against the brute-force matcher for fuzzed
// filters and topics.
func FuzzTrieMatch(f *testing.F) {
	f.Add("a/+/#", "a/b/c", "$share/g/+/b")
	f.Add("#", "$SYS/x", "+/x")
	f.Add("a//b", "a//b", "a/+/b")
	f.Fuzz(func(t *testing.T, f1, topic, f2 string) {
		if ValidateTopicName(topic) != nil {
			return
		}
		tr := NewTrie()
		var routes []route
		for i, s := range []string{f1, f2, "#", "+/+"} {
			sub, err := ParseSubscription(s)
			if err != nil {
				continue
			}
			rt := route{"t", sub, Receiver{1, fmt.Sprint(i)}}
			if tr.Add(rt.tenant, rt.sub, rt.r) {
				routes = append(routes, rt)
			}
		}
		checkAgainstOracle(t, tr, routes, "t", topic)
	})
}
