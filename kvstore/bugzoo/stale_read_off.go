//go:build !bugzoo_stale_read

package bugzoo

// StaleRead is off in a normal build.
const StaleRead = false
