// Package dist is the subscription routing coprocessor: it keeps the routes
// (tenant, topic filter, receiver) of the dist keyspace and matches published
// topics against them with the MQTT rules: '+' and '#' wildcards, no leading
// wildcard matching a $-topic, $share groups (one member per message) and
// $oshare groups (the same member for the same publisher).
//
// The Trie is the pure core: no I/O, safe for concurrent use, tested against
// a brute-force matcher (MatchFilter) by table, random and fuzz tests.
package dist
