package kvstore

import (
	"log/slog"
	"strings"

	"github.com/lni/dragonboat/v4/logger"

	"github.com/bifrost-mq/bifrost/kvstore/internal/dbinit"
)

func init() {
	// Dragonboat's settings package has read the trimmed soft settings by now
	// (kvstore imports it); return to the caller's working directory.
	dbinit.Restore()
}

// setupDragonboatLogging routes Dragonboat's logs into slog. The sink is
// process-wide: the last store opened names the logger.
func setupDragonboatLogging(log *slog.Logger) {
	log = log.With("component", "dragonboat")
	dbinit.SetSink(func(level logger.LogLevel, pkg, msg string) {
		switch {
		case level <= logger.ERROR:
			log.Error(msg, "pkg", pkg)
		case level == logger.WARNING && !benignWarning(msg):
			log.Warn(msg, "pkg", pkg)
		case level == logger.DEBUG || level == logger.WARNING:
			log.Debug(msg, "pkg", pkg)
		default:
			log.Info(msg, "pkg", pkg)
		}
	})
}

// benignWarning reports whether one of Dragonboat's warnings is about a
// choice the store made on purpose, and so logged at debug level: it reads
// with StaleRead where it knows it may, and a range that starts as its own
// only voter runs a short election timeout (see quickElection).
func benignWarning(msg string) bool {
	for _, p := range []string{
		"StaleRead called",
		"ElectionRTT is not a magnitude larger than HeartbeatRTT",
	} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
