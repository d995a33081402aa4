package kvstore

import (
	"encoding/binary"
	"strings"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Engine key prefixes. Every key in the store's Pebble starts with one of these.
const (
	prefixData  byte = 'd'
	prefixMeta  byte = 'm'
	prefixLocal byte = 'l'
	// prefixDedupe + keyspace + escaped key + request ID -> DedupeRecord: the
	// result of a write, kept in the order of the write's key (dedupeKey).
	prefixDedupe byte = 'r'
)

// Suffixes of per-range metadata keys: 'm' + rangeID + suffix.
const (
	metaDescriptor byte = 'D'
	metaApplied    byte = 'A'
	// The results of commands addressed to the range itself (split, merge,
	// ID allocation), which never move to another range.
	metaDedupe     byte = 'R' // + request ID -> DedupeRecord
	metaDedupeTime byte = 'T' // + range time ms (8 bytes) + request ID -> empty
	metaNextID     byte = 'N' // range 1 only: the next range ID to allocate
	// The range's time (8 bytes, milliseconds): the newest stamp of the
	// commands the range applied (rangeClock). The dedupe window is judged
	// from it, so every replica, whatever its batching, treats the same
	// records as expired.
	metaRangeTime byte = 'I'
	// The range's size, the bytes of its data span's keys and values (8
	// bytes, size.go), written with the applied index.
	metaBytes byte = 'B'
)

// Local record kinds: 'l' + kind + ...
const (
	localBoot  byte = 'b' // + rangeID -> BootRecord
	localIdent byte = 'i' // store identity
	localTomb  byte = 't' // + rangeID -> Tombstone
)

// DataKey returns the engine key of a user key in a keyspace.
func DataKey(ks kvpb.Keyspace, key []byte) []byte {
	out := make([]byte, 0, 2+len(key))
	out = append(out, prefixData, byte(ks))
	return append(out, key...)
}

// dataSpan returns the engine span [lo, hi) of a range's data.
func dataSpan(d *kvpb.RangeDescriptor) (lo, hi []byte) {
	lo = DataKey(d.Keyspace, d.Start)
	if len(d.End) == 0 {
		hi = []byte{prefixData, byte(d.Keyspace) + 1}
	} else {
		hi = DataKey(d.Keyspace, d.End)
	}
	return lo, hi
}

// dedupeKey is where the result of a write with a request ID is kept: under
// the write's key, so that a range's records are those of its span, like its
// data. A split or merge then moves none, and a retry that the router sends
// to the range holding the key now (a split child, a merged left neighbour)
// finds the record. The key is escaped (0x00 as 0x00 0xff, ended by 0x00
// 0x01) so that the request ID after it cannot carry a record past the end
// of the span its key lies in.
func dedupeKey(ks kvpb.Keyspace, key, requestID []byte) []byte {
	b := make([]byte, 0, 2+len(key)+2+len(requestID)+4)
	b = appendEscaped(append(b, prefixDedupe, byte(ks)), key)
	return append(b, requestID...)
}

func appendEscaped(b, key []byte) []byte {
	for _, c := range key {
		if c == 0 {
			b = append(b, 0, 0xff)
		} else {
			b = append(b, c)
		}
	}
	return append(b, 0, 1)
}

// dedupeSpan returns the engine span [lo, hi) of a range's dedupe records.
func dedupeSpan(d *kvpb.RangeDescriptor) (lo, hi []byte) {
	lo = appendEscaped([]byte{prefixDedupe, byte(d.Keyspace)}, d.Start)
	if len(d.End) == 0 {
		hi = []byte{prefixDedupe, byte(d.Keyspace) + 1}
	} else {
		hi = appendEscaped([]byte{prefixDedupe, byte(d.Keyspace)}, d.End)
	}
	return lo, hi
}

func metaPrefix(rangeID uint64) []byte {
	b := make([]byte, 9, 32)
	b[0] = prefixMeta
	binary.BigEndian.PutUint64(b[1:], rangeID)
	return b
}

func metaKey(rangeID uint64, suffix byte, rest ...[]byte) []byte {
	b := append(metaPrefix(rangeID), suffix)
	for _, r := range rest {
		b = append(b, r...)
	}
	return b
}

// metaSpan is every replicated metadata key of one range.
func metaSpan(rangeID uint64) (lo, hi []byte) {
	return metaPrefix(rangeID), metaPrefix(rangeID + 1)
}

func localBootKey(rangeID uint64) []byte {
	b := []byte{prefixLocal, localBoot, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint64(b[2:], rangeID)
	return b
}

func localTombKey(rangeID uint64) []byte {
	b := []byte{prefixLocal, localTomb, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint64(b[2:], rangeID)
	return b
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// ContainsKey reports whether a keyspace-relative key lies in the range.
func ContainsKey(d *kvpb.RangeDescriptor, key []byte) bool {
	if string(key) < string(d.Start) {
		return false
	}
	return len(d.End) == 0 || string(key) < string(d.End)
}

// KeyspaceName is a keyspace's short name: kv, dist, inbox, retain (the
// enum's name without its prefix, in lower case).
func KeyspaceName(ks kvpb.Keyspace) string {
	return strings.ToLower(strings.TrimPrefix(ks.String(), "KEYSPACE_"))
}
