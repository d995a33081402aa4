// Package bugzoo holds deliberate faults of the MQTT frontend for the
// consistency harness to catch (jepsen/, like kvstore/bugzoo). Each is a
// constant that is false unless the binary is built with its tag, so a
// normal build compiles the faults away:
//
//	bugzoo_puback_before_insert  acknowledge a publish (PUBACK, PUBREC) before
//	                             its inbox inserts commit; they run in the
//	                             background after a 100 ms batching window
//	                             and their failures are ignored
//	bugzoo_commit_past_unacked   when a client acknowledges a persistent
//	                             session's message, commit the next one too,
//	                             acknowledged or not
//	bugzoo_takeover_no_kick      a takeover does not tell the older connection's
//	                             frontend to close it (SkipRemoteKick); it
//	                             lives until its session loop finds out
package bugzoo
