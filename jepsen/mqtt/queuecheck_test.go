package mqtt

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// hist builds histories for the checkers' tests: operations with a
// process each, and observations completed at once; times in ms.
type hist struct {
	h  history.History
	ms int64
}

func (b *hist) add(typ history.Type, process int, f, key string, v any) {
	op := history.Op{Index: len(b.h), Type: typ, Process: process, F: f, Key: key, Time: b.ms * 1e6}
	if v != nil {
		op.Value, _ = json.Marshal(v)
	}
	b.h = append(b.h, op)
	b.ms++
}

// op records an invocation and its completion.
func (b *hist) op(process int, f, key string, inv, comp any, typ history.Type) {
	b.add(history.Invoke, process, f, key, inv)
	b.add(typ, process, f, key, comp)
}

func (b *hist) observe(process int, f, key string, v any) { b.op(process, f, key, v, v, history.OK) }

func (b *hist) publish(process int, msg string, qos byte, typ history.Type) {
	b.op(process, FPublish, "q/p", PublishValue{Message: msg, QoS: qos, Frontend: "f1"}, nil, typ)
}

func (b *hist) subscribe(sub string) {
	b.observe(100, FSubscribe, sub, SubscribeValue{Filter: QueueFilter, QoS: 2})
}

func (b *hist) deliver(sub, msg string, qos byte, dup bool, pid uint16, app bool) {
	b.observe(100, FDeliver, sub, DeliverValue{Topic: "q/p", Message: msg, QoS: qos, Dup: dup, PacketID: pid, App: app})
}

func checkQueue(t *testing.T, h history.History) (jepsen.Result, QueueDetails) {
	t.Helper()
	r := QueueChecker{}.Check(context.Background(), h, t.TempDir())
	d, _ := r.Details.(QueueDetails)
	return r, d
}

// TestQueueChecker: each rule of the queue checker on a history made by
// hand; every invalid case is what a broker bug would produce.
func TestQueueChecker(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(b *hist)
		want  jepsen.Verdict
		check func(t *testing.T, d QueueDetails)
	}{
		{"every acknowledged message delivered once, in order", func(b *hist) {
			b.subscribe("sub0")
			b.publish(1, "p1:1", 2, history.OK)
			b.publish(1, "p1:2", 2, history.OK)
			b.deliver("sub0", "p1:1", 2, false, 1, true)
			b.deliver("sub0", "p1:2", 2, false, 2, true)
		}, jepsen.Valid, func(t *testing.T, d QueueDetails) {
			if d.Expected != 2 || d.Delivered != 2 {
				t.Errorf("expected %d delivered %d, want 2 and 2", d.Expected, d.Delivered)
			}
		}},
		{"an acknowledged message never delivered is lost (PUBACK before the insert commits)", func(b *hist) {
			b.subscribe("sub0")
			b.publish(1, "p1:1", 1, history.OK)
			b.publish(1, "p1:2", 1, history.OK)
			b.deliver("sub0", "p1:1", 1, false, 1, true)
		}, jepsen.Invalid, func(t *testing.T, d QueueDetails) {
			if d.Lost != 1 || d.Examples["lost"][0] != "sub0 never got p1:2" {
				t.Errorf("lost %d %v, want p1:2", d.Lost, d.Examples["lost"])
			}
		}},
		{"a message published before the subscription need not arrive; an unknown publish need not arrive", func(b *hist) {
			b.publish(1, "p1:1", 1, history.OK)
			b.subscribe("sub0")
			b.publish(1, "p1:2", 1, history.Info)
			b.publish(2, "p2:1", 1, history.OK)
			b.deliver("sub0", "p2:1", 1, false, 1, true)
		}, jepsen.Valid, nil},
		{"a message delivered to one subscriber only is lost for the other", func(b *hist) {
			b.subscribe("sub0")
			b.subscribe("sub1")
			b.publish(1, "p1:1", 1, history.OK)
			b.deliver("sub0", "p1:1", 1, false, 1, true)
		}, jepsen.Invalid, func(t *testing.T, d QueueDetails) {
			if d.Lost != 1 || d.Expected != 2 {
				t.Errorf("lost %d of %d, want 1 of 2", d.Lost, d.Expected)
			}
		}},
		{"QoS 1 duplicates are counted, not invalid", func(b *hist) {
			b.subscribe("sub0")
			b.publish(1, "p1:1", 1, history.OK)
			b.deliver("sub0", "p1:1", 1, false, 1, true)
			b.deliver("sub0", "p1:1", 1, true, 1, true)
		}, jepsen.Valid, func(t *testing.T, d QueueDetails) {
			if d.DuplicateQoS1 != 1 {
				t.Errorf("QoS 1 duplicates %d, want 1", d.DuplicateQoS1)
			}
		}},
		{"a QoS 2 message the application gets twice is invalid", func(b *hist) {
			b.subscribe("sub0")
			b.publish(1, "p1:1", 2, history.OK)
			b.deliver("sub0", "p1:1", 2, false, 1, true)
			// Resent with a new packet ID: the client cannot know it.
			b.deliver("sub0", "p1:1", 2, true, 7, true)
		}, jepsen.Invalid, func(t *testing.T, d QueueDetails) {
			if d.DuplicateQoS2 != 1 {
				t.Errorf("QoS 2 duplicates %d, want 1", d.DuplicateQoS2)
			}
		}},
		{"a QoS 2 resend with DUP and the same packet ID, dropped by the client, is fine", func(b *hist) {
			b.subscribe("sub0")
			b.publish(1, "p1:1", 2, history.OK)
			b.deliver("sub0", "p1:1", 2, false, 1, true)
			b.deliver("sub0", "p1:1", 2, true, 1, false)
		}, jepsen.Valid, func(t *testing.T, d QueueDetails) {
			if d.DroppedResend != 1 || d.DuplicateQoS2 != 0 {
				t.Errorf("dropped %d duplicates %d, want 1 and 0", d.DroppedResend, d.DuplicateQoS2)
			}
		}},
		{"a QoS 2 resend without the DUP flag is invalid", func(b *hist) {
			b.subscribe("sub0")
			b.publish(1, "p1:1", 2, history.OK)
			b.deliver("sub0", "p1:1", 2, false, 1, true)
			b.deliver("sub0", "p1:1", 2, false, 1, false)
		}, jepsen.Invalid, func(t *testing.T, d QueueDetails) {
			if d.DupFlagWrong != 1 {
				t.Errorf("DUP flags wrong %d, want 1", d.DupFlagWrong)
			}
		}},
		{"one publisher's messages first delivered out of order", func(b *hist) {
			b.subscribe("sub0")
			b.publish(1, "p1:1", 1, history.OK)
			b.publish(1, "p1:2", 1, history.OK)
			b.deliver("sub0", "p1:2", 1, false, 2, true)
			b.deliver("sub0", "p1:1", 1, false, 1, true)
		}, jepsen.Invalid, func(t *testing.T, d QueueDetails) {
			if d.OutOfOrder != 1 {
				t.Errorf("out of order %d, want 1", d.OutOfOrder)
			}
		}},
		{"a redelivery of an older message after a newer one is not out of order", func(b *hist) {
			b.subscribe("sub0")
			b.publish(1, "p1:1", 1, history.OK)
			b.publish(1, "p1:2", 1, history.OK)
			b.deliver("sub0", "p1:1", 1, false, 1, true)
			b.deliver("sub0", "p1:2", 1, false, 2, true)
			b.deliver("sub0", "p1:1", 1, true, 1, true)
		}, jepsen.Valid, nil},
		{"a delivery of a refused publish is unexpected", func(b *hist) {
			b.subscribe("sub0")
			b.publish(1, "p1:1", 1, history.OK)
			b.publish(1, "p1:2", 1, history.Fail)
			b.deliver("sub0", "p1:1", 1, false, 1, true)
			b.deliver("sub0", "p1:2", 1, false, 2, true)
		}, jepsen.Invalid, func(t *testing.T, d QueueDetails) {
			if d.Unexpected != 1 {
				t.Errorf("unexpected %d, want 1", d.Unexpected)
			}
		}},
		{"a persistent subscriber that finds no session", func(b *hist) {
			b.subscribe("sub0")
			b.publish(1, "p1:1", 1, history.OK)
			b.deliver("sub0", "p1:1", 1, false, 1, true)
			b.op(0, FConnect, "sub0", ConnectValue{Frontend: "f2"}, ConnectValue{Frontend: "f2", LostSession: true}, history.OK)
		}, jepsen.Invalid, func(t *testing.T, d QueueDetails) {
			if d.LostSessions != 1 {
				t.Errorf("lost sessions %d, want 1", d.LostSessions)
			}
		}},
		{"no subscription: nothing to check", func(b *hist) {
			b.publish(1, "p1:1", 1, history.OK)
		}, jepsen.Unknown, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &hist{}
			tc.build(b)
			r, d := checkQueue(t, b.h)
			if r.Valid != tc.want {
				t.Fatalf("verdict %s (%s), want %s", r.Valid, r.Summary, tc.want)
			}
			if tc.check != nil {
				tc.check(t, d)
			}
		})
	}
}
