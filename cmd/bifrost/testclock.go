package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// testClockOffsetFlag is -test-clock-offset-file, for the consistency
// harness only (the jepsen clock-skew nemesis): the wall clock the store
// reads (kvstore.Config.WallClock) is offset by the duration the file holds
// ("11m", "-10m"; absent or empty: 0), re-read at most every 100 ms, so the
// harness skews a running node's clock. A normal build stamps nothing
// replicated with that clock (the dedupe window is counted on each range's
// own time); the bug zoo's bugzoo_wall_clock_dedupe does.
const testClockOffsetFlag = "test-clock-offset-file"

// fileOffsetClock is the wall clock offset by a file's duration.
type fileOffsetClock struct {
	path string

	mu     sync.Mutex
	offset time.Duration
	read   time.Time
}

// newFileOffsetClock checks the file once, so that a bad one fails the
// start rather than being ignored later.
func newFileOffsetClock(path string) (*fileOffsetClock, error) {
	c := &fileOffsetClock{path: path}
	off, err := readClockOffset(path)
	if err != nil {
		return nil, fmt.Errorf("invalid -%s: %v", testClockOffsetFlag, err)
	}
	c.offset, c.read = off, time.Now()
	return c, nil
}

func readClockOffset(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s holds %q: want a duration such as 11m or -10m", path, s)
	}
	return d, nil
}

// Now is the offset wall clock. A file that cannot be read keeps the last
// offset.
func (c *fileOffsetClock) Now() time.Time {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.read) >= 100*time.Millisecond {
		if off, err := readClockOffset(c.path); err == nil {
			c.offset = off
		}
		c.read = now
	}
	return now.Add(c.offset)
}
