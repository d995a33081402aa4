//go:build bugzoo_skip_version

package bugzoo

// SkipEpochCheck is on: this binary carries the fault.
const SkipEpochCheck = true
