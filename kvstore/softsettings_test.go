package kvstore

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bifrost-mq/bifrost/kvstore/internal/dbinit"
)

// The trimmed Dragonboat settings are applied at init and the working
// directory is the caller's again afterwards.
func TestSoftSettingsAppliedAndWorkingDirRestored(t *testing.T) {
	if !dbinit.Applied {
		t.Fatal("trimmed soft settings were not put in place")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(wd, "statemachine.go")); err != nil {
		t.Fatalf("working directory is %s, not the package's", wd)
	}
}
