//go:build bugzoo_ack_before_commit

package bugzoo

// AckBeforeCommit is on: this binary carries the fault.
const AckBeforeCommit = true
