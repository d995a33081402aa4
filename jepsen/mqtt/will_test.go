package mqtt

import (
	"testing"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// TestWillChecker: the will checker on histories made by hand (ms).
func TestWillChecker(t *testing.T) {
	connect := func(b *hist, p int, will, conn string, delayMs int64) {
		v := WillValue{Frontend: "f1", Conn: conn, ClientID: "wc" + will, Will: will, DelayMs: delayMs}
		b.op(p, FConnect, "wc", map[string]any{"frontend": "f1"}, v, history.OK)
	}
	end := func(b *hist, p int, f, will string, resumed bool) {
		b.op(p, f, "wc", nil, WillValue{Will: will, Resumed: resumed}, history.OK)
	}
	published := func(b *hist, will string, dup bool) {
		b.observe(100, FDeliver, "sub0", DeliverValue{Topic: "w/1", Message: will, QoS: 1, Dup: dup, App: true})
	}
	watch := func(b *hist) { b.subscribe("sub0") }
	for _, tc := range []struct {
		name  string
		build func(b *hist)
		want  jepsen.Verdict
		check func(t *testing.T, d WillDetails)
	}{
		{"a crash publishes the will once; a DISCONNECT none", func(b *hist) {
			watch(b)
			connect(b, 1, "will-1", "c1", 0)
			end(b, 1, FCrash, "will-1", false)
			published(b, "will-1", false)
			published(b, "will-1", true) // a resend to the watcher
			connect(b, 1, "will-2", "c2", 0)
			end(b, 1, FDisconnect, "will-2", false)
		}, jepsen.Valid, func(t *testing.T, d WillDetails) {
			if d.Due != 1 || d.NotDue != 1 || d.Published != 1 {
				t.Errorf("%+v", d)
			}
		}},
		{"a will lost with its frontend", func(b *hist) {
			watch(b)
			connect(b, 1, "will-1", "c1", 0)
			b.observe(101, FClosed, "wc", ClosedValue{Conn: "c1", Reason: "eof"})
		}, jepsen.Invalid, func(t *testing.T, d WillDetails) {
			if d.Lost != 1 || d.ByEnd["server"] != 1 {
				t.Errorf("%+v", d)
			}
		}},
		{"a will published twice", func(b *hist) {
			watch(b)
			connect(b, 1, "will-1", "c1", 0)
			end(b, 1, FCrash, "will-1", false)
			published(b, "will-1", false)
			published(b, "will-1", false)
		}, jepsen.Invalid, func(t *testing.T, d WillDetails) {
			if d.Twice != 1 {
				t.Errorf("%+v", d)
			}
		}},
		{"a will published after a DISCONNECT", func(b *hist) {
			watch(b)
			connect(b, 1, "will-1", "c1", 0)
			end(b, 1, FDisconnect, "will-1", false)
			published(b, "will-1", false)
		}, jepsen.Invalid, nil},
		{"a delayed will published before its delay", func(b *hist) {
			watch(b)
			connect(b, 1, "will-1", "c1", 3000)
			end(b, 1, FCrash, "will-1", false)
			published(b, "will-1", false)
		}, jepsen.Invalid, func(t *testing.T, d WillDetails) {
			if d.Early != 1 {
				t.Errorf("%+v", d)
			}
		}},
		{"a delayed will of a session resumed in time is not published", func(b *hist) {
			watch(b)
			connect(b, 1, "will-1", "c1", 3000)
			end(b, 1, FResume, "will-1", true)
			published(b, "will-1", false)
		}, jepsen.Invalid, func(t *testing.T, d WillDetails) {
			if d.Unexpected != 1 {
				t.Errorf("%+v", d)
			}
		}},
		{"a resume whose reconnect got no CONNACK leaves its will unchecked", func(b *hist) {
			watch(b)
			connect(b, 1, "will-1", "c1", 3000)
			b.op(1, FResume, "wc", nil, WillValue{Will: "will-1", ReconnectFailed: true}, history.OK)
			connect(b, 2, "will-2", "c2", 0)
			end(b, 2, FCrash, "will-2", false)
			published(b, "will-2", false)
		}, jepsen.Valid, func(t *testing.T, d WillDetails) {
			if d.Unchecked != 1 || d.Lost != 0 || d.Due != 1 {
				t.Errorf("%+v: want will-1 unchecked, will-2 due and published", d)
			}
		}},
		{"a delayed will published after its delay", func(b *hist) {
			watch(b)
			connect(b, 1, "will-1", "c1", 3000)
			end(b, 1, FCrash, "will-1", false)
			b.ms += 3000
			published(b, "will-1", false)
		}, jepsen.Valid, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &hist{}
			tc.build(b)
			r := WillChecker{}.Check(t.Context(), b.h, t.TempDir())
			if r.Valid != tc.want {
				t.Fatalf("verdict %s (%s), want %s", r.Valid, r.Summary, tc.want)
			}
			if tc.check != nil {
				tc.check(t, r.Details.(WillDetails))
			}
		})
	}
}
