//go:build bugzoo_skip_compaction

package bugzoo

// SkipChildCompaction is on: this binary carries the fault.
const SkipChildCompaction = true
