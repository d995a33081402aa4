package auth

import (
	"strings"
	"testing"
)

func TestMatchTopic(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b", "a", false},
		{"a/+", "a/b", true},
		{"a/+", "a/", true}, // an empty level is a level
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"+/+", "/", true},
		{"+", "/", false},
		{"a/#", "a", true}, // '#' includes the parent (MQTT-4.7.1-1)
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"#", "a/b", true},
		{"#", "/a", true},
		{"+/b/#", "x/b", true},
		{"+/b/#", "x/c", false},
		{"a/b/", "a/b/", true},
		{"a/b/", "a/b", false},
		// $-topics are not matched by a leading wildcard (MQTT-4.7.2-1).
		{"#", "$SYS/uptime", false},
		{"+/uptime", "$SYS/uptime", false},
		{"$SYS/#", "$SYS/uptime", true},
		{"$SYS/+", "$SYS/uptime", true},
		{"a/#", "a/$b", true},
		{"a/+", "a/$b", true},
	} {
		if got := matchTopic(literal(tc.filter), tc.topic); got != tc.want {
			t.Errorf("matchTopic(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		rule, requested string
		want            bool
	}{
		{"sensors/#", "sensors/+/temp", true},
		{"sensors/#", "sensors/#", true},
		{"sensors/#", "sensors", true},
		{"sensors/#", "sensors/a/b/c", true},
		{"sensors/#", "#", false},
		{"sensors/#", "+/temp", false},
		{"sensors/+/temp", "sensors/#", false},
		{"sensors/+/temp", "sensors/+/temp", true},
		{"sensors/+/temp", "sensors/k/temp", true},
		{"sensors/+/temp", "sensors/k/+", false},
		{"sensors/k/temp", "sensors/+/temp", false},
		{"a/+", "a/#", false}, // "a/#" also matches "a"
		{"a/+/#", "a/#", false},
		{"a/+/#", "a/+", true},
		{"a/+/#", "a/+/#", true},
		{"a", "a/#", false},
		{"a", "a", true},
		{"a", "a/b", false},
		{"#", "#", true},
		{"#", "+/+", true},
		{"+", "+", true},
		{"+", "a/b", false},
		{"+/#", "a", true},
		// $ filters: a leading wildcard covers no $-topic.
		{"#", "$SYS/#", false},
		{"+/#", "$SYS/x", false},
		{"$SYS/#", "$SYS/+", true},
		{"$SYS/#", "#", false},
		{"$SYS/+", "$SYS/broker/x", false},
	} {
		if got := covers(literal(tc.rule), tc.requested); got != tc.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tc.rule, tc.requested, got, tc.want)
		}
	}
}

func TestOverlaps(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+/c", "a/b/#", true},
		{"a/+", "a/b/c", false},
		{"a/+", "a/#", true},
		{"a/#", "a", true},
		{"a", "a/#", true},
		{"a", "a/+", false},
		{"a/b", "a", false},
		{"a", "a/b", false},
		{"#", "x/y", true},
		{"+/+", "+", false},
		{"+", "+", true},
		{"news/secret", "news/#", true},
		{"news/secret", "news/sport/#", false},
		// Leading wildcards and $-topics.
		{"$SYS/#", "#", false},
		{"#", "$SYS/#", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/x", "+/x", false},
		{"$SYS/#", "$SYS/+", true},
		{"#", "+/x", true},
	} {
		if got := overlaps(literal(tc.a), tc.b); got != tc.want {
			t.Errorf("overlaps(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := overlaps(literal(tc.b), tc.a); got != tc.want {
			t.Errorf("overlaps(%q, %q) = %v, want %v (swapped)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestValidTopics(t *testing.T) {
	for _, tc := range []struct {
		s            string
		name, filter bool
	}{
		{"a/b", true, true},
		{"/", true, true},
		{"", false, false},
		{"a/+", false, true},
		{"a/#", false, true},
		{"#", false, true},
		{"a/#/b", false, false},
		{"a#", false, false},
		{"a/b+", false, false},
		{"a\x00b", false, false},
		{strings.Repeat("a", maxTopicLen+1), false, false},
	} {
		if got := validTopicName(tc.s); got != tc.name {
			t.Errorf("validTopicName(%.20q) = %v", tc.s, got)
		}
		if got := validFilter(tc.s); got != tc.filter {
			t.Errorf("validFilter(%.20q) = %v", tc.s, got)
		}
	}
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"a/b", "a/b", true},
		{"$share/g/a/#", "a/#", true},
		{"$oshare/g/+", "+", true},
		{"$share/g", "", false},
		{"$share//a", "", false},
		{"$share/g+/a", "", false},
		{"$shared/g/a", "$shared/g/a", true},
	} {
		if got, ok := stripShare(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("stripShare(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
