// Package kvstore is the node-local engine of a Bifrost storage node.
//
// One Pebble database per store holds the data of every range on the store;
// Dragonboat runs one Raft group per range (shard ID = range ID). The range
// state machine applies a batch of committed entries in one Pebble batch
// together with the range's applied index, checks every command against the
// range's span and descriptor version at apply time, and returns user-level
// failures as results, never as errors (an error from Update stops the
// process).
//
// Invariants:
//   - A data key is 'd' + keyspace + user key, so the data of a range never
//     moves when ranges split or merge.
//   - The replicated metadata of a range (descriptor, applied index, dedupe
//     records) is written in the same batch as the data it describes.
//   - The dedupe record of a write lives under the write's key ('r' +
//     keyspace + escaped key + request ID), so it stays with the key through
//     splits and merges, as the data does, and a retry finds it on whichever
//     range holds the key now.
//   - A range's size (the bytes of its data keys and values) is a counter
//     that every data write moves through the Tx that makes it, written with
//     the applied index; nothing that reports sizes reads the data (size.go).
//   - Local records (boot records, the store identity) are never replicated.
//   - A range whose descriptor is missing refuses every data command.
//   - A snapshot replaces the range's metadata, data and dedupe spans at
//     once, and nothing outside them: a small one in one synced batch, a
//     large one as tables written from the stream (each with a range
//     deletion of its part of a span) ingested together, so an install's
//     memory does not grow with the range (snapshot_install.go).
package kvstore
