//go:build !bugzoo_skip_version

package bugzoo

// SkipEpochCheck is off in a normal build.
const SkipEpochCheck = false
