package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// scheduler runs the nemeses on a seeded schedule: quiet for QuietStart,
// then repeatedly a fault chosen by the seed, held for about FaultFor (a
// momentary one is not held), then quiet for about FaultEvery. Every start
// and stop is recorded in the history as the nemesis process.
type scheduler struct {
	cfg    Config
	c      *cluster.Cluster
	rec    *history.Recorder
	log    *slog.Logger
	rng    *rand.Rand
	active Nemesis
}

// actionTimeout bounds one nemesis action (a split waits for its range).
const actionTimeout = 30 * time.Second

func (s *scheduler) jitter(mean time.Duration) time.Duration {
	return time.Duration(float64(mean) * (0.5 + s.rng.Float64()))
}

// sleep waits d or until ctx ends, and says whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (s *scheduler) run(ctx context.Context) error {
	if len(s.cfg.Nemeses) == 0 {
		<-ctx.Done()
		return nil
	}
	if !sleep(ctx, s.cfg.QuietStart) {
		return nil
	}
	var errs []error
	for ctx.Err() == nil {
		n := s.cfg.Nemeses[s.rng.IntN(len(s.cfg.Nemeses))]
		if err := s.start(n); err != nil {
			errs = append(errs, err)
		}
		if m, ok := n.(Momentary); !ok || !m.Momentary() {
			sleep(ctx, s.jitter(s.cfg.FaultFor))
		}
		if err := s.stop(); err != nil {
			errs = append(errs, err)
		}
		sleep(ctx, s.jitter(s.cfg.FaultEvery))
	}
	return errors.Join(errs...)
}

func (s *scheduler) start(n Nemesis) error {
	s.rec.Record(history.Op{Type: history.Invoke, Process: history.NemesisProcess, F: "start", Key: n.Name()})
	ctx, cancel := context.WithTimeout(context.Background(), actionTimeout)
	defer cancel()
	desc, err := n.Start(ctx, s.c, s.rng)
	s.active = n
	done := history.Op{Type: history.OK, Process: history.NemesisProcess, F: "start", Key: n.Name()}
	done.Value, _ = json.Marshal(desc)
	if err != nil {
		done.Type, done.Error = history.Fail, err.Error()
		s.log.Warn("nemesis start failed", "nemesis", n.Name(), "err", err)
	} else {
		s.log.Info("fault", "nemesis", n.Name(), "what", desc)
	}
	s.rec.Record(done)
	return err
}

func (s *scheduler) stop() error {
	n := s.active
	if n == nil {
		return nil
	}
	s.active = nil
	s.rec.Record(history.Op{Type: history.Invoke, Process: history.NemesisProcess, F: "stop", Key: n.Name()})
	ctx, cancel := context.WithTimeout(context.Background(), actionTimeout)
	defer cancel()
	err := n.Stop(ctx, s.c)
	done := history.Op{Type: history.OK, Process: history.NemesisProcess, F: "stop", Key: n.Name()}
	if err != nil {
		done.Type, done.Error = history.Fail, err.Error()
		s.log.Warn("nemesis stop failed", "nemesis", n.Name(), "err", err)
	}
	s.rec.Record(done)
	return err
}

// healAll stops the active fault and then undoes every fault there is:
// partitions, paused and stopped processes.
func (s *scheduler) healAll(ctx context.Context) error {
	errs := []error{s.stop()}
	ctx, cancel := context.WithTimeout(ctx, actionTimeout)
	defer cancel()
	s.rec.Record(history.Op{Type: history.Invoke, Process: history.NemesisProcess, F: "heal", Key: "all"})
	errs = append(errs, s.c.Heal(ctx))
	s.c.ClearDelays()
	for _, n := range s.c.Nodes() {
		errs = append(errs, n.Resume())
		if !n.Running() {
			errs = append(errs, n.Start(ctx))
		}
	}
	err := errors.Join(errs...)
	done := history.Op{Type: history.OK, Process: history.NemesisProcess, F: "heal", Key: "all"}
	if err != nil {
		done.Type, done.Error = history.Fail, err.Error()
	}
	s.rec.Record(done)
	return err
}
