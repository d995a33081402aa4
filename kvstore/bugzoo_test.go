package kvstore

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBugzooWallClockDedupeIsCaught: with the bug zoo's
// bugzoo_wall_clock_dedupe (commands stamped with the proposing store's
// wall clock, records with the command's stamp: the store before issue 15)
// the clock-skew tests must fail, each on a retry that applied twice. It
// builds this package with the tag and runs them in a child go test.
func TestBugzooWallClockDedupeIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package with a fault and runs its tests in a child go test")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the package with the fault: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const tag = "bugzoo_wall_clock_dedupe"
	cmd := exec.CommandContext(ctx, goBin, "test", "-tags", tag, "-count=1", "-timeout", "2m",
		"-run", "^(TestDedupeIgnoresAFastWallClock|TestDedupeOnASlowWallClock)$", "-v", ".")
	out, err := cmd.CombinedOutput()
	output := string(out)
	var exit *exec.ExitError
	if ctx.Err() != nil || !errors.As(err, &exit) {
		t.Fatalf("go test -tags %s: %v, want it to run and fail:\n%s", tag, err, output)
	}
	for _, want := range []string{
		"--- FAIL: TestDedupeIgnoresAFastWallClock", "--- FAIL: TestDedupeOnASlowWallClock", "it applied twice",
	} {
		if !strings.Contains(output, want) {
			t.Fatalf("go test -tags %s failed, but its output lacks %q:\n%s", tag, want, output)
		}
	}
}
