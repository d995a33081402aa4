//go:build bugzoo_skip_version

package bugzoo

// SkipVersionCheck is on: this binary carries the fault.
const SkipVersionCheck = true
