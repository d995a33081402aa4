//go:build !bugzoo_ack_before_commit

package bugzoo

// AckBeforeCommit is off in a normal build.
const AckBeforeCommit = false
