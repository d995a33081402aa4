//go:build !bugzoo_wall_clock_dedupe

package bugzoo

// WallClockDedupe is off in a normal build.
const WallClockDedupe = false
