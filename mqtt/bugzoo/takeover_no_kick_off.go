//go:build !bugzoo_takeover_no_kick

package bugzoo

// SkipRemoteKick is off in a normal build.
const SkipRemoteKick = false
