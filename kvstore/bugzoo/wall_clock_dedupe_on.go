//go:build bugzoo_wall_clock_dedupe

package bugzoo

// WallClockDedupe is on: this binary carries the fault.
const WallClockDedupe = true
