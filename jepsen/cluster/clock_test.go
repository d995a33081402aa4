package cluster

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestSetClockOffset: the offset file a store re-reads (bifrost's
// -test-clock-offset-file) holds a Go duration, and only stores have one.
func TestSetClockOffset(t *testing.T) {
	n := &Node{Name: "n1", Role: RoleStore, dir: t.TempDir()}
	for _, d := range []time.Duration{11 * time.Minute, -11 * time.Minute, 0} {
		if err := n.SetClockOffset(d); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(n.clockOffsetPath())
		if err != nil {
			t.Fatal(err)
		}
		if got, err := time.ParseDuration(strings.TrimSpace(string(b))); err != nil || got != d {
			t.Fatalf("the file says %q for %v", b, d)
		}
	}
	if err := (&Node{Name: "f1", Role: RoleFrontend, dir: t.TempDir()}).SetClockOffset(time.Minute); err == nil {
		t.Fatal("a frontend's clock was skewed")
	}
}
