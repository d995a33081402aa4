//go:build bugzoo_commit_past_unacked

package bugzoo

// CommitPastUnacked is on: this binary carries the fault.
const CommitPastUnacked = true
