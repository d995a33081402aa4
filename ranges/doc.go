// Package ranges turns the stores' ranges into one key-value service.
//
// It holds the routing table that every node builds from gossiped range
// descriptors (a google/btree per keyspace, keyed by start key), the Router
// that sends a request to the range holding its key and retries on a stale
// version or a lost leader, the gRPC services of a storage node (public KV,
// store-to-store, admin), membership through hashicorp/memberlist, the
// one-time cluster bootstrap, and replica changes kept in step with Raft.
//
// Invariants:
//   - A routing entry is replaced only by a descriptor with a higher ver, or
//     the same ver and a higher conf_ver: gossip never rolls the table back.
//   - A request is retried only where that is safe: refused before it was
//     applied, or carrying a request ID that the range deduplicates.
package ranges
