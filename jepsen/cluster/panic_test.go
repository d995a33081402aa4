package cluster

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLastPanic: a crash is named by the log's last panic and the first
// bifrost function of its stack.
func TestLastPanic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bifrost.log")
	log := "=== jepsen: start n1\nlevel=INFO msg=x\npanic: old\n=== jepsen: start n1\n" +
		"panic: runtime error: invalid memory address or nil pointer dereference\n" +
		"[signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0xfd6fcb]\n\n" +
		"goroutine 403 [running]:\nsync/atomic.(*Int32).Add(...)\n\t/usr/local/go/src/sync/atomic/type.go:94\n" +
		"github.com/bifrost-mq/bifrost/ranges.(*Membership).Members(0x0)\n\t/work/ranges/membership.go:154 +0x2b\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "panic: runtime error: invalid memory address or nil pointer dereference at ranges.(*Membership).Members"
	if got := lastPanic(path); got != want {
		t.Fatalf("lastPanic = %q, want %q", got, want)
	}
	if got := lastPanic(filepath.Join(t.TempDir(), "none")); got != "" {
		t.Fatalf("lastPanic of a missing log = %q", got)
	}
}
