// Package testbin builds the bifrost binary, with or without bug-zoo tags,
// once per test process, for the harness's tests.
package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	built = map[string]string{}
	dir   string
)

// EnvBinary names an environment variable holding a prebuilt untagged
// binary, which the tests use instead of building one.
const EnvBinary = "JEPSEN_BIFROST"

// Bifrost returns the path of a bifrost binary built with tags ("" for a
// normal build), building it once per test process into a temporary
// directory that Cleanup removes. An untagged build is skipped when
// $JEPSEN_BIFROST names a binary.
func Bifrost(t testing.TB, tags string) string {
	t.Helper()
	if tags == "" {
		if p := os.Getenv(EnvBinary); p != "" {
			return p
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[tags]; ok {
		return p
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "bfj-bin-")
		if err != nil {
			t.Fatal(err)
		}
		dir = d
	}
	name := "bifrost"
	if tags != "" {
		name += "-" + strings.ReplaceAll(tags, ",", "-")
	}
	out := filepath.Join(dir, name)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(args, "./cmd/bifrost")...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags %q: %v\n%s", tags, err, b)
	}
	built[tags] = out
	return out
}

// Cleanup removes the built binaries; call it from TestMain after m.Run.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
	}
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}
