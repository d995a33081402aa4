//go:build !bugzoo_skip_version

package bugzoo

// SkipVersionCheck is off in a normal build.
const SkipVersionCheck = false
