// Package softsettings trims Dragonboat's per-replica queues, which it reads
// only from a file named dragonboat-soft-settings.json in the working
// directory when its internal settings package initialises.
//
// Go initialises packages in import-path order among those whose imports are
// ready (the Go 1.21 rule). This package imports only "os", as Dragonboat's
// settings package does, and its path sorts before github.com/lni/..., so its
// init runs first: it writes the file in a temporary directory and changes
// into it. Restore, called from kvstore's init (which runs after Dragonboat's),
// changes back and removes the directory. An operator's own
// dragonboat-soft-settings.json in the working directory wins: then nothing
// is changed.
//
// The trimmed queues bring an idle range from about 1.2 MB of heap to about a
// fifth of that (BenchmarkIdleRangeMemory in kvstore).
package softsettings

import "os"

// Settings is the JSON Dragonboat reads. The queue lengths bound the
// proposals and reads one range can have in flight before Dragonboat answers
// "busy", which the router retries.
const Settings = `{
  "ReceiveQueueLength": 64,
  "IncomingProposalQueueLength": 512,
  "IncomingReadIndexQueueLength": 512,
  "PendingProposalShards": 2
}`

const fileName = "dragonboat-soft-settings.json"

var (
	origDir string
	tmpDir  string
	// Applied reports whether this package's settings were put in place.
	Applied bool
)

func init() {
	if _, err := os.Stat(fileName); err == nil {
		return
	}
	wd, err := os.Getwd()
	if err != nil {
		return
	}
	dir, err := os.MkdirTemp("", "bifrost-dragonboat-")
	if err != nil {
		return
	}
	if err := os.WriteFile(dir+string(os.PathSeparator)+fileName, []byte(Settings), 0o600); err != nil {
		os.RemoveAll(dir)
		return
	}
	if err := os.Chdir(dir); err != nil {
		os.RemoveAll(dir)
		return
	}
	origDir, tmpDir, Applied = wd, dir, true
}

// Restore changes back to the original working directory. It must run after
// Dragonboat's settings package has initialised.
func Restore() {
	if tmpDir == "" {
		return
	}
	if err := os.Chdir(origDir); err != nil {
		panic("bifrost: cannot return to the working directory " + origDir + ": " + err.Error())
	}
	os.RemoveAll(tmpDir)
	tmpDir = ""
}
