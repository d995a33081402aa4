// Package dbinit prepares Dragonboat before its packages initialise: it trims
// the per-replica queues, which Dragonboat reads only from a file named
// dragonboat-soft-settings.json in the working directory when its internal
// settings package initialises, and it installs the logger factory, so that
// even the messages Dragonboat logs at init go through Bifrost's logging.
//
// Go initialises packages in import-path order among those whose imports are
// ready (the Go 1.21 rule). This package imports only packages that
// Dragonboat's settings package imports too (os, fmt, sync/atomic and
// Dragonboat's logger; strconv, which fmt imports), and its path sorts before github.com/lni/..., so its
// init runs first: it writes the file in a temporary directory and changes
// into it. Restore, called from kvstore's init (which runs after Dragonboat's),
// changes back and removes the directory. An operator's own
// dragonboat-soft-settings.json in the working directory wins: then the
// working directory is left alone.
//
// The trimmed queues bring an idle range from about 1.2 MB of heap to about
// 190 KB of Dragonboat's, and to about 36 KB with a receive queue of 16
// (BenchmarkIdleRanges in kvstore, heap profile at 5,000 ranges a store; see
// Settings for what that costs under load).
package dbinit

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/lni/dragonboat/v4/logger"
)

// Settings is the JSON Dragonboat reads, with the receive queue's length
// for %d. Dragonboat allocates every queue at its full length when a replica
// starts, so each slot is paid by every idle range.
//
// IncomingProposalQueueLength and IncomingReadIndexQueueLength bound the
// proposals and reads one range can have queued between two steps of its
// shard before Dragonboat answers "busy", which the router retries.
//
// ReceiveQueueLength bounds the Raft messages a replica holds between two
// steps; Dragonboat drops what does not fit ("dropped an incoming message"),
// silently for the sender, and each drop stalls a caller (the router retries
// after its 2 s attempt timeout). A message is 304 bytes and the queue is
// two buffers: 256 (the default) cost 155 KB a range, most of an idle
// range's heap. Three stores on one 2-core box under 64 cmd/kvbench clients
// on one range dropped about 950 messages in 20 s of gets at 64 and none at
// 256; at 16 (10 KB a range) they dropped 12,140 in 10 s of puts and gets,
// and puts fell to about 1k ops/s with a 1 s p99. A store of many idle
// ranges and no hot one can set a short queue with ReceiveQueueEnv.
//
// PendingProposalShards is one math/rand source (5 KB) each; the entry
// slice and task queue sizes are the initial capacities of slices that grow.
const Settings = `{
  "ReceiveQueueLength": %d,
  "IncomingProposalQueueLength": 64,
  "IncomingReadIndexQueueLength": 64,
  "PendingProposalShards": 1,
  "InMemEntrySliceSize": 16,
  "MinEntrySliceFreeSize": 4,
  "TaskQueueInitialCap": 4
}`

// ReceiveQueueEnv names the environment variable that sets the receive
// queue's length (4 to 65536 messages; default DefaultReceiveQueue). It is
// read when the process starts: Dragonboat reads its settings only then.
const ReceiveQueueEnv = "BIFROST_RAFT_RECEIVE_QUEUE"

// DefaultReceiveQueue is the receive queue's length without ReceiveQueueEnv.
const DefaultReceiveQueue = 256

// Err is the error of a bad ReceiveQueueEnv (then the default applies);
// kvstore.Open returns it.
var Err error

// settings returns Settings with the receive queue's length.
func settings() (string, error) {
	n := uint64(DefaultReceiveQueue)
	if v, ok := os.LookupEnv(ReceiveQueueEnv); ok {
		q, err := strconv.ParseUint(v, 10, 64)
		if err != nil || q < 4 || q > 65536 {
			return fmt.Sprintf(Settings, n), fmt.Errorf("%s=%q: want a number of Raft messages from 4 to 65536", ReceiveQueueEnv, v)
		}
		n = q
	}
	return fmt.Sprintf(Settings, n), nil
}

const fileName = "dragonboat-soft-settings.json"

var (
	origDir string
	tmpDir  string
	// Applied reports whether this package's settings were put in place.
	Applied bool
)

// Sink receives Dragonboat's log lines at or above the package's level.
type Sink func(level logger.LogLevel, pkg, msg string)

var sink atomic.Pointer[Sink]

// SetSink routes Dragonboat's logs; before it is called, warnings and errors
// go to stderr and the rest is dropped.
func SetSink(s Sink) { sink.Store(&s) }

func init() {
	logger.SetLoggerFactory(func(pkg string) logger.ILogger {
		level := int32(logger.WARNING)
		if pkg == "raft" {
			// The Raft core warns of every dropped proposal while a leader
			// is being elected; the router retries those, so they are noise.
			level = int32(logger.ERROR)
		}
		l := &dbLogger{pkg: pkg}
		l.level.Store(level)
		return l
	})
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
	var js string
	js, Err = settings()
	if err := os.WriteFile(dir+string(os.PathSeparator)+fileName, []byte(js), 0o600); err != nil {
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

type dbLogger struct {
	pkg   string
	level atomic.Int32
}

func (l *dbLogger) SetLevel(lv logger.LogLevel) { l.level.Store(int32(lv)) }

func (l *dbLogger) log(lv logger.LogLevel, format string, args []any) {
	if int32(lv) > l.level.Load() {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if s := sink.Load(); s != nil {
		(*s)(lv, l.pkg, msg)
		return
	}
	fmt.Fprintf(os.Stderr, "dragonboat %s: %s\n", l.pkg, msg)
}

func (l *dbLogger) Debugf(format string, args ...any)   { l.log(logger.DEBUG, format, args) }
func (l *dbLogger) Infof(format string, args ...any)    { l.log(logger.INFO, format, args) }
func (l *dbLogger) Warningf(format string, args ...any) { l.log(logger.WARNING, format, args) }
func (l *dbLogger) Errorf(format string, args ...any)   { l.log(logger.ERROR, format, args) }
func (l *dbLogger) Panicf(format string, args ...any) {
	l.log(logger.CRITICAL, format, args)
	panic(fmt.Sprintf(format, args...))
}
