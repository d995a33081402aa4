package kvstore

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/lni/dragonboat/v4/logger"

	"github.com/bifrost-mq/bifrost/kvstore/internal/softsettings"
)

var dragonboatLoggingOnce sync.Once

// setupDragonboatLogging routes Dragonboat's logs into slog, dropping its
// info chatter. Dragonboat's logger factory is process-global and can be set
// once; the first store's logger wins.
func setupDragonboatLogging(log *slog.Logger) {
	dragonboatLoggingOnce.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			level := logger.WARNING
			if pkg == "raft" {
				// The Raft core warns of every dropped proposal while a leader
				// is being elected; the router retries those, so they are noise.
				level = logger.ERROR
			}
			return &dbLogger{log: log.With("component", "dragonboat", "pkg", pkg), level: level}
		})
	})
}

type dbLogger struct {
	mu    sync.Mutex
	log   *slog.Logger
	level logger.LogLevel
}

func (l *dbLogger) SetLevel(lv logger.LogLevel) {
	l.mu.Lock()
	l.level = lv
	l.mu.Unlock()
}

func (l *dbLogger) enabled(lv logger.LogLevel) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return lv <= l.level
}

func (l *dbLogger) Debugf(format string, args ...any) {
	if l.enabled(logger.DEBUG) {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

func (l *dbLogger) Infof(format string, args ...any) {
	if l.enabled(logger.INFO) {
		l.log.Info(fmt.Sprintf(format, args...))
	}
}

func (l *dbLogger) Warningf(format string, args ...any) {
	if l.enabled(logger.WARNING) {
		l.log.Warn(fmt.Sprintf(format, args...))
	}
}

func (l *dbLogger) Errorf(format string, args ...any) {
	if l.enabled(logger.ERROR) {
		l.log.Error(fmt.Sprintf(format, args...))
	}
}

func (l *dbLogger) Panicf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
	panic(fmt.Sprintf(format, args...))
}

func init() {
	// Dragonboat's settings package has read the trimmed soft settings by now
	// (kvstore imports it); return to the caller's working directory.
	softsettings.Restore()
}
