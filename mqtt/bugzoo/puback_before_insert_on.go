//go:build bugzoo_puback_before_insert

package bugzoo

// AckBeforeInsert is on: this binary carries the fault.
const AckBeforeInsert = true
