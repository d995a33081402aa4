package kvstore

import (
	"log/slog"

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
		case level == logger.WARNING:
			log.Warn(msg, "pkg", pkg)
		case level == logger.DEBUG:
			log.Debug(msg, "pkg", pkg)
		default:
			log.Info(msg, "pkg", pkg)
		}
	})
}
