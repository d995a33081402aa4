//go:build !bugzoo_commit_past_unacked

package bugzoo

// CommitPastUnacked is off in a normal build.
const CommitPastUnacked = false
