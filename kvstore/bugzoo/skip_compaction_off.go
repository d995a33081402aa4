//go:build !bugzoo_skip_compaction

package bugzoo

// SkipChildCompaction is off in a normal build.
const SkipChildCompaction = false
