//go:build bugzoo_stale_read

package bugzoo

// StaleRead is on: this binary carries the fault.
const StaleRead = true
