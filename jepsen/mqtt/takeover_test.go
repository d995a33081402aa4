package mqtt

import (
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// TestTakeoverChecker: the takeover checker on histories made by hand;
// times are in ms (hist adds 1 ms per event, wait adds more).
func TestTakeoverChecker(t *testing.T) {
	connect := func(b *hist, process int, id, conn, fe string, clean, lost bool) {
		b.op(process, FConnect, id, ConnectValue{Frontend: fe, Clean: clean},
			ConnectValue{Frontend: fe, Conn: conn, Clean: clean, SessionPresent: !lost, LostSession: lost}, history.OK)
	}
	closed := func(b *hist, id, conn, reason string) {
		b.observe(100, FClosed, id, ClosedValue{Conn: conn, Reason: reason})
	}
	wait := func(b *hist, ms int64) { b.ms += ms }
	pause := func(b *hist, fe string) {
		b.add(history.Invoke, history.NemesisProcess, "start", "pause-frontend", nil)
		b.add(history.OK, history.NemesisProcess, "start", "pause-frontend", "paused "+fe)
	}
	resume := func(b *hist) {
		b.add(history.Invoke, history.NemesisProcess, "stop", "pause-frontend", nil)
		b.add(history.OK, history.NemesisProcess, "stop", "pause-frontend", nil)
	}
	for _, tc := range []struct {
		name  string
		build func(b *hist)
		want  jepsen.Verdict
		check func(t *testing.T, d TakeoverDetails)
	}{
		{"the older connection closes before the newer CONNACK", func(b *hist) {
			connect(b, 0, "tkp0", "c1", "f1", false, false)
			closed(b, "tkp0", "c1", "disconnect 0x8e")
			connect(b, 1, "tkp0", "c2", "f2", false, false)
		}, jepsen.Valid, func(t *testing.T, d TakeoverDetails) {
			if d.Connections != 2 || d.Takeovers != 1 || d.MaxOverlapMs != 0 {
				t.Errorf("%+v: want 2 connections, 1 takeover, no overlap", d)
			}
		}},
		{"the older connection closes within the bound", func(b *hist) {
			connect(b, 0, "tkp0", "c1", "f1", false, false)
			connect(b, 1, "tkp0", "c2", "f2", false, false)
			wait(b, 500)
			closed(b, "tkp0", "c1", "disconnect 0x8e")
		}, jepsen.Valid, nil},
		{"the older connection on another frontend stays open (no Kick)", func(b *hist) {
			connect(b, 0, "tkp0", "c1", "f1", false, false)
			connect(b, 1, "tkp0", "c2", "f2", false, false)
			wait(b, 4000)
			closed(b, "tkp0", "c1", "disconnect 0x8e")
		}, jepsen.Invalid, func(t *testing.T, d TakeoverDetails) {
			if d.Overlaps != 1 || d.OverlapPers != 1 || d.MaxOverlapMs < 4000 {
				t.Errorf("%+v: want one persistent overlap of 4 s", d)
			}
		}},
		{"two clean connections of one ID both open to the end (issue 13)", func(b *hist) {
			connect(b, 0, "tkc0", "c1", "f1", true, false)
			connect(b, 1, "tkc0", "c2", "f2", true, false)
			wait(b, 2000)
			b.publish(2, "p2:1", 1, history.OK) // the history goes on
		}, jepsen.Invalid, func(t *testing.T, d TakeoverDetails) {
			if d.OverlapClean != 1 {
				t.Errorf("%+v: want one clean overlap", d)
			}
		}},
		{"the older connection's frontend was paused: closed as it ran again", func(b *hist) {
			connect(b, 0, "tkc0", "c1", "f1", true, false)
			pause(b, "f1")
			connect(b, 1, "tkc0", "c2", "f2", true, false)
			wait(b, 3000)
			resume(b)
			wait(b, 200)
			closed(b, "tkc0", "c1", "disconnect 0x8e")
		}, jepsen.Valid, func(t *testing.T, d TakeoverDetails) {
			if d.Overlaps != 0 || d.PausedOverlaps != 1 {
				t.Errorf("%+v: want one overlap excused by the pause", d)
			}
		}},
		{"the older connection's frontend was paused, and ran on too long", func(b *hist) {
			connect(b, 0, "tkc0", "c1", "f1", true, false)
			pause(b, "f1")
			connect(b, 1, "tkc0", "c2", "f2", true, false)
			wait(b, 3000)
			resume(b)
			wait(b, 1500)
			closed(b, "tkc0", "c1", "disconnect 0x8e")
		}, jepsen.Invalid, func(t *testing.T, d TakeoverDetails) {
			if d.Overlaps != 1 || d.PausedOverlaps != 0 {
				t.Errorf("%+v: want one overlap of 1.5 s running", d)
			}
		}},
		{"another frontend's pause excuses nothing", func(b *hist) {
			connect(b, 0, "tkc0", "c1", "f1", true, false)
			pause(b, "f3")
			connect(b, 1, "tkc0", "c2", "f2", true, false)
			wait(b, 3000)
			resume(b)
			closed(b, "tkc0", "c1", "disconnect 0x8e")
		}, jepsen.Invalid, nil},
		{"connections of different IDs may overlap", func(b *hist) {
			connect(b, 0, "tkp0", "c1", "f1", false, false)
			connect(b, 1, "tkp1", "c2", "f2", false, false)
			wait(b, 5000)
		}, jepsen.Unknown, nil},
		{"a persistent session not found after a takeover", func(b *hist) {
			connect(b, 0, "tkp0", "c1", "f1", false, false)
			closed(b, "tkp0", "c1", "disconnect 0x8e")
			connect(b, 1, "tkp0", "c2", "f2", false, true)
		}, jepsen.Invalid, func(t *testing.T, d TakeoverDetails) {
			if d.LostSessions != 1 {
				t.Errorf("%+v: want one lost session", d)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &hist{}
			tc.build(b)
			r := TakeoverChecker{Bound: time.Second}.Check(t.Context(), b.h, t.TempDir())
			if r.Valid != tc.want {
				t.Fatalf("verdict %s (%s), want %s", r.Valid, r.Summary, tc.want)
			}
			if tc.check != nil {
				tc.check(t, r.Details.(TakeoverDetails))
			}
		})
	}
}
