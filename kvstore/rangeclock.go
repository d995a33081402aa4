package kvstore

import (
	"sync"
	"time"
)

// rangeClock is a store's estimate of a range's time, the clock the dedupe
// window is counted on (docs/split-merge.md, "Dedupe records and time").
//
// A range's time is replicated state: the applied commands' stamps move it
// forward (applier.rangeMs, persisted as metaRangeTime), so every replica
// judges a record's age alike. What must not move it is a node's wall
// clock: one node eleven minutes fast made every record of the range look
// expired, and a slow node's records were expired as they were written. So
// a store stamps a command with the range's time as it last saw it applied
// plus the time elapsed since, on its monotonic clock: a wall clock that is
// off, or stepped, changes nothing. The estimate never runs ahead of the
// time the range really has had (a stamp is at most the stamp it started
// from plus the real time since that stamp was made), so a record lives at
// least the window; it may live longer when stores restart (the time down
// is not counted), which costs space only.
type rangeClock struct {
	mu sync.Mutex
	// ms was the range's time at the monotonic instant at.
	ms int64
	at time.Time
}

// observe records that the range's time is ms as of now: the store applied
// it (or opened, or installed a snapshot holding it). A time behind the
// running estimate is ignored.
func (c *rangeClock) observe(ms int64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || ms > c.ms+now.Sub(c.at).Milliseconds() {
		c.ms, c.at = ms, now
	}
}

// stamp returns the range's time now, for a command to be proposed. It
// counts from the newest anchor the store has, at real speed: a store that
// proposes back to back does not restart from what it last applied, which
// would lose a commit latency per command and stall the range's time.
func (c *rangeClock) stamp(now time.Time) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		c.at = now
	}
	return c.ms + max(now.Sub(c.at).Milliseconds(), 0)
}
