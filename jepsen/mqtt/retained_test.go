package mqtt

import (
	"testing"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/history"
	"github.com/bifrost-mq/bifrost/jepsen/kv"
)

// TestRetainedChecker: the retained workload's operations, as its client
// records them (the arguments name the frontend), checked by its checker:
// a fresh subscription that misses an acknowledged retained message, or
// sees an older one, is not linearizable.
func TestRetainedChecker(t *testing.T) {
	write := func(b *hist, p int, v string, typ history.Type) {
		b.op(p, kv.FWrite, "r/0", retainedArgs{Args: kv.Args{Value: v}, Frontend: "f1"}, nil, typ)
	}
	read := func(b *hist, p int, r kv.Result) {
		b.op(p, kv.FRead, "r/0", retainedArgs{Frontend: "f2"}, r, history.OK)
	}
	for _, tc := range []struct {
		name  string
		build func(b *hist)
		want  jepsen.Verdict
	}{
		{"a read after a write sees it", func(b *hist) {
			read(b, 0, kv.Result{})
			write(b, 0, "1", history.OK)
			read(b, 1, kv.Result{Value: "1", Found: true})
		}, jepsen.Valid},
		{"a fresh subscription finds no retained message after an acknowledged write", func(b *hist) {
			write(b, 0, "1", history.OK)
			read(b, 1, kv.Result{})
		}, jepsen.Invalid},
		{"a fresh subscription gets an overwritten retained message", func(b *hist) {
			write(b, 0, "1", history.OK)
			write(b, 0, "2", history.OK)
			read(b, 1, kv.Result{Value: "1", Found: true})
		}, jepsen.Invalid},
		{"an unacknowledged write may take effect later", func(b *hist) {
			write(b, 0, "1", history.Info)
			read(b, 1, kv.Result{})
			read(b, 2, kv.Result{Value: "1", Found: true})
		}, jepsen.Valid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &hist{}
			tc.build(b)
			r := NewRetained(0).Checkers()[0].Check(t.Context(), b.h, t.TempDir())
			if r.Valid != tc.want {
				t.Fatalf("verdict %s (%s), want %s", r.Valid, r.Summary, tc.want)
			}
		})
	}
}
