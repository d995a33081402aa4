//go:build !bugzoo_puback_before_insert

package bugzoo

// AckBeforeInsert is off in a normal build.
const AckBeforeInsert = false
