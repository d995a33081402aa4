package dist

import (
	"errors"
	"strings"
)

// Errors of topic names and filters (MQTT 5.0 sections 4.7 and 4.8).
var (
	ErrEmptyTopic     = errors.New("topic must not be empty")               // MQTT-4.7.3-1
	ErrWildcardInName = errors.New("topic name must not contain wildcards") // MQTT-3.3.2-2
	ErrBadMultiLevel  = errors.New("'#' must be the last level and stand alone")
	ErrBadSingleLevel = errors.New("'+' must occupy a whole level")
	ErrNullInTopic    = errors.New("topic must not contain U+0000") // MQTT-4.7.3-2
	ErrBadShare       = errors.New("shared subscription needs $share/<group>/<filter> with a group free of wildcards")
	ErrTopicTooLong   = errors.New("topic longer than 65535 bytes") // MQTT-4.7.3-3
)

// ValidateTopicName checks a topic a message is published to.
func ValidateTopicName(topic string) error {
	switch {
	case topic == "":
		return ErrEmptyTopic
	case len(topic) > 65535:
		return ErrTopicTooLong
	case strings.ContainsRune(topic, 0):
		return ErrNullInTopic
	case strings.ContainsAny(topic, "+#"):
		return ErrWildcardInName
	}
	return nil
}

// ValidateFilter checks a topic filter, without a share prefix.
func ValidateFilter(filter string) error {
	switch {
	case filter == "":
		return ErrEmptyTopic
	case len(filter) > 65535:
		return ErrTopicTooLong
	case strings.ContainsRune(filter, 0):
		return ErrNullInTopic
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) { // MQTT-4.7.1-1
			return ErrBadMultiLevel
		}
		if strings.Contains(l, "+") && l != "+" { // MQTT-4.7.1-2
			return ErrBadSingleLevel
		}
	}
	return nil
}

// Subscription is a parsed topic filter: a plain filter, or a shared one
// ($share/group/filter: one member per message; $oshare/group/filter: the
// same member for the same publisher).
type Subscription struct {
	Filter  string
	Group   string
	Ordered bool
}

// ParseSubscription splits a share prefix off a filter and validates it.
func ParseSubscription(s string) (Subscription, error) {
	for _, prefix := range []string{"$share/", "$oshare/"} {
		if !strings.HasPrefix(s, prefix) {
			continue
		}
		rest := s[len(prefix):]
		group, filter, ok := strings.Cut(rest, "/")
		if !ok || group == "" || filter == "" || strings.ContainsAny(group, "+#") { // MQTT-4.8.2-1, 4.8.2-2
			return Subscription{}, ErrBadShare
		}
		if err := ValidateFilter(filter); err != nil {
			return Subscription{}, err
		}
		return Subscription{Filter: filter, Group: group, Ordered: prefix == "$oshare/"}, nil
	}
	if err := ValidateFilter(s); err != nil {
		return Subscription{}, err
	}
	return Subscription{Filter: s}, nil
}

// String returns the subscription as a client wrote it.
func (s Subscription) String() string {
	switch {
	case s.Group == "":
		return s.Filter
	case s.Ordered:
		return "$oshare/" + s.Group + "/" + s.Filter
	}
	return "$share/" + s.Group + "/" + s.Filter
}

// MatchFilter reports whether a topic name matches a filter: the rules of
// MQTT 4.7, done level by level with no index. It is the oracle the trie is
// tested against.
func MatchFilter(filter, topic string) bool {
	// MQTT-4.7.2-1: a filter starting with a wildcard does not match a topic
	// starting with '$'.
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fl := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	for i, f := range fl {
		if f == "#" {
			return true // matches the parent level too: "a/#" matches "a"
		}
		if i >= len(tl) {
			return false
		}
		if f != "+" && f != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}
