// Package topictest makes topics for tests.
package topictest

import "strings"

// Long is a topic (or filter) of n bytes: levels of 100 bytes under first,
// which tells tests apart.
func Long(first string, n int) string {
	var b strings.Builder
	b.WriteString(first)
	for i := 0; b.Len() < n; i++ {
		b.WriteByte('/')
		b.WriteString(strings.Repeat(string(rune('a'+i%26)), 99))
	}
	return b.String()[:n]
}
