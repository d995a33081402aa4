package inbox

import (
	"strconv"
	"strings"
)

// ReceiverID names one incarnation of an inbox as a dist receiver (kind
// ReceiverInbox): "<incarnation>:<inbox>". The incarnation keeps a route of
// a discarded or expired session from reaching (and its removal from
// touching) a later session of the same client.
func ReceiverID(inbox string, incarnation uint64) string {
	return strconv.FormatUint(incarnation, 10) + ":" + inbox
}

// ParseReceiverID splits a receiver ID made by ReceiverID. An ID without an
// incarnation names the inbox itself, with incarnation 0 (whatever exists).
func ParseReceiverID(id string) (inbox string, incarnation uint64) {
	n, rest, ok := strings.Cut(id, ":")
	if !ok || n == "" || n[0] == '+' {
		return id, 0
	}
	inc, err := strconv.ParseUint(n, 10, 64)
	if err != nil || inc == 0 {
		return id, 0
	}
	return rest, inc
}
