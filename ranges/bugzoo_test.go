package ranges_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The bug zoo (kvstore/bugzoo) holds deliberate faults, each compiled in by
// a build tag. These tests build this package with a fault and run
// TestLinearizableSteady in a child `go test`, and require the child to fail
// because porcupine found its history not linearizable: the proof that the
// linearizability tests can fail, kept in `make test` rather than done once
// by hand.

// TestBugzooStaleReadIsCaught: reads served from the local replica with no
// ReadIndex (ranges/server.go) must be caught.
func TestBugzooStaleReadIsCaught(t *testing.T) {
	requireCaught(t, "bugzoo_stale_read")
}

// TestBugzooAckBeforeCommitIsCaught: writes acknowledged before they commit
// (kvstore/store.go) must be caught.
func TestBugzooAckBeforeCommitIsCaught(t *testing.T) {
	requireCaught(t, "bugzoo_ack_before_commit")
}

func requireCaught(t *testing.T, tag string) {
	if testing.Short() {
		t.Skip("builds the package with a fault and runs a cluster test in a child go test")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the package with -tags %s: %v", tag, err)
	}
	timeout := 4 * time.Minute
	if d, ok := t.Deadline(); ok {
		timeout = min(timeout, time.Until(d)-10*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	visDir := t.TempDir()
	start := time.Now()
	// The working directory of a test is its package's directory.
	cmd := exec.CommandContext(ctx, goBin, "test", "-tags", tag, "-run", "^TestLinearizableSteady$",
		"-count=1", "-timeout", "3m", "-v", ".")
	cmd.Env = append(os.Environ(), linVisualizationDirEnv+"="+visDir)
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start).Round(time.Millisecond)
	output := string(out)
	logOutput := func() {
		if len(output) > 20000 {
			output = "…" + output[len(output)-20000:]
		}
		t.Logf("output of go test -tags %s:\n%s", tag, output)
	}
	if ctx.Err() != nil {
		logOutput()
		t.Fatalf("go test -tags %s did not finish within %v", tag, timeout)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		logOutput()
		t.Fatalf("go test -tags %s: %v, want it to run and fail", tag, err)
	}
	for _, bad := range []string{"[build failed]", "[setup failed]", "panic: ", "test timed out", "[no tests to run]"} {
		if strings.Contains(output, bad) {
			logOutput()
			t.Fatalf("go test -tags %s failed with %q, not on a non-linearizable history", tag, bad)
		}
	}
	for _, want := range []string{"--- FAIL: TestLinearizableSteady", "porcupine: Illegal", "the history is not linearizable"} {
		if !strings.Contains(output, want) {
			logOutput()
			t.Fatalf("go test -tags %s failed, but its output lacks %q: not the porcupine check that failed", tag, want)
		}
	}
	vis, err := filepath.Glob(filepath.Join(visDir, "bifrost-linearizability-*.html"))
	if err != nil || len(vis) != 1 {
		logOutput()
		t.Fatalf("want one visualization of the non-linearizable history in %s, found %v (%v)", visDir, vis, err)
	}
	t.Logf("go test -tags %s failed on a non-linearizable history, as it must, in %v", tag, elapsed)
}
