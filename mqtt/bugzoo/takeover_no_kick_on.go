//go:build bugzoo_takeover_no_kick

package bugzoo

// SkipRemoteKick is on: this binary carries the fault.
const SkipRemoteKick = true
