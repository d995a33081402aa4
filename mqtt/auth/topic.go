package auth

import "strings"

// The MQTT topic rules the ACL needs (MQTT 5.0 sections 4.7 and 4.8),
// written to match without allocating: filters are split into levels once,
// topics are walked level by level.

const maxTopicLen = 65535 // MQTT-4.7.3-3

// validTopicName reports whether t may be published to.
func validTopicName(t string) bool {
	return t != "" && len(t) <= maxTopicLen && !strings.ContainsAny(t, "+#\x00")
}

// validFilter reports whether f is a topic filter (without a share prefix).
func validFilter(f string) bool {
	if f == "" || len(f) > maxTopicLen || strings.ContainsRune(f, 0) {
		return false
	}
	for rest, more := f, true; more; {
		var level string
		level, rest, more = strings.Cut(rest, "/")
		if strings.Contains(level, "#") && (level != "#" || more) { // MQTT-4.7.1-1
			return false
		}
		if strings.Contains(level, "+") && level != "+" { // MQTT-4.7.1-2
			return false
		}
	}
	return true
}

// stripShare returns the filter of a shared subscription
// ($share/<group>/<filter> or $oshare/<group>/<filter>), or f itself;
// ok is false for a malformed share.
func stripShare(f string) (filter string, ok bool) {
	for _, prefix := range []string{"$share/", "$oshare/"} {
		rest, found := strings.CutPrefix(f, prefix)
		if !found {
			continue
		}
		group, filter, found := strings.Cut(rest, "/")
		if !found || group == "" || filter == "" || strings.ContainsAny(group, "+#") { // MQTT-4.8.2-1, 4.8.2-2
			return "", false
		}
		return filter, true
	}
	return f, true
}

// pattern is a filter, split into levels, whose levels may hold %c and %u
// with the values they stand for. The values never contain '+', '#' or '/'
// (rule.check refuses them), so the wildcards are exactly the template's
// and a level is compared without building its expansion.
type pattern struct {
	levels             []string
	vars               []bool // levels[i] holds %c or %u; nil: none does
	clientID, username string
}

// literal is a pattern without placeholders.
func literal(filter string) *pattern { return &pattern{levels: strings.Split(filter, "/")} }

// eq reports whether level i, expanded, is s.
func (p *pattern) eq(i int, s string) bool {
	if p.vars == nil || !p.vars[i] {
		return p.levels[i] == s
	}
	t := p.levels[i]
	for j := 0; j < len(t); j++ {
		if v, ok := p.variable(t, j); ok {
			if !strings.HasPrefix(s, v) {
				return false
			}
			s = s[len(v):]
			j++
			continue
		}
		if s == "" || s[0] != t[j] {
			return false
		}
		s = s[1:]
	}
	return s == ""
}

// variable returns the value of the placeholder at t[j], if one is there.
func (p *pattern) variable(t string, j int) (string, bool) {
	if t[j] != '%' || j+1 == len(t) {
		return "", false
	}
	switch t[j+1] {
	case 'c':
		return p.clientID, true
	case 'u':
		return p.username, true
	}
	return "", false
}

// dollar reports whether the expanded first level starts with '$'.
func (p *pattern) dollar() bool {
	t := p.levels[0]
	if p.vars != nil && p.vars[0] {
		if v, ok := p.variable(t, 0); ok && v != "" {
			return v[0] == '$'
		}
	}
	return strings.HasPrefix(t, "$")
}

// leadingWildcard reports whether a filter starts with a wildcard, which
// does not match topics beginning with '$' (MQTT-4.7.2-1).
func (p *pattern) leadingWildcard() bool {
	return p.levels[0] == "+" || p.levels[0] == "#"
}

// matchTopic reports whether the topic name matches the filter.
func matchTopic(p *pattern, topic string) bool {
	if p.leadingWildcard() && strings.HasPrefix(topic, "$") {
		return false
	}
	rest, more := topic, true
	for i, f := range p.levels {
		if f == "#" {
			return true // it also matches the parent: "a/#" matches "a"
		}
		if !more {
			return false
		}
		var level string
		level, rest, more = strings.Cut(rest, "/")
		if f != "+" && !p.eq(i, level) {
			return false
		}
	}
	return !more
}

// covers reports whether every topic the requested filter matches is
// matched by the pattern: "a/#" covers "a/+/b" and "a", "a/+" covers "a/b"
// but not "a/#".
func covers(p *pattern, requested string) bool {
	// A requested filter starting with '$' matches only $-topics, which a
	// leading wildcard of the rule does not.
	if p.leadingWildcard() && strings.HasPrefix(requested, "$") {
		return false
	}
	rest, more := requested, true
	for i, f := range p.levels {
		if f == "#" {
			return true
		}
		if !more {
			return false
		}
		var level string
		level, rest, more = strings.Cut(rest, "/")
		switch {
		case level == "#":
			return false // any depth, including the parent: only '#' covers it
		case f == "+":
			// covers one level, literal or '+'
		case level == "+" || !p.eq(i, level):
			return false
		}
	}
	return !more
}

// overlaps reports whether some topic is matched by both the pattern and
// requested: "a/+/c" and "a/b/#" overlap, "a/+" and "a/b/c" do not.
func overlaps(p *pattern, requested string) bool {
	rest, more := requested, true
	for i, f := range p.levels {
		if !more {
			// requested ended; it shares its last topic with the pattern
			// only if the pattern goes on with '#', which matches the parent.
			return f == "#"
		}
		var level string
		level, rest, more = strings.Cut(rest, "/")
		if i == 0 {
			// A leading wildcard matches no $-topic, which is all a $-level
			// matches (MQTT-4.7.2-1).
			fw, rw := p.leadingWildcard(), level == "+" || level == "#"
			if fw && !rw && strings.HasPrefix(level, "$") || rw && !fw && p.dollar() {
				return false
			}
		}
		switch {
		case f == "#" || level == "#":
			return true
		case f == "+" || level == "+" || p.eq(i, level):
		default:
			return false
		}
	}
	if !more {
		return true
	}
	// The pattern ended; requested overlaps only if it goes on with '#'.
	next, _, _ := strings.Cut(rest, "/")
	return next == "#"
}
