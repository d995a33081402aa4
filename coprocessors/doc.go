// Package coprocessors holds the deterministic code that runs inside the
// state machines of ranges: dist (subscription routing), inbox (persistent
// session queues) and retain (retained messages). Each binds to one keyspace.
package coprocessors
