// Package bugzoo holds deliberate faults for the consistency harness to
// catch (jepsen/). Each is a constant that is false unless the binary is
// built with its tag, so a normal build compiles the faults away:
//
//	bugzoo_stale_read        serve linearizable reads from the local replica, no ReadIndex
//	bugzoo_skip_version      skip the epoch check at apply time: the command's
//	                         version and its keys' span (SkipEpochCheck)
//	bugzoo_ack_before_commit acknowledge a write before it is committed
//	bugzoo_skip_compaction   skip the split child's log compaction, at its start
//	                         and before a replica is added to a range
//	bugzoo_wall_clock_dedupe stamp commands with the proposing store's wall clock
//	                         (WallClockDedupe): one node's fast clock expires
//	                         the range's dedupe records, a slow node's expire
//	                         as they are written, and retries apply twice
package bugzoo
