package auth

import (
	"context"
	"net"
	"runtime"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Login floods: a bcrypt check costs tens of milliseconds of one core, so
// 16 threads of wrong passwords took both cores of a small box and made a
// good login wait over a second. Two limits keep failed logins from eating
// the CPU:
//   - at most maxChecks password checks run at once (half the cores, at
//     least one); the others wait their turn, or their CONNECT's deadline;
//   - each source address may fail failBurst logins at once and then one per
//     failEvery: past that, its CONNECTs are refused without a check until
//     it has credit again (a correct password included: the check is what
//     costs).

const (
	failBurst = 10
	failEvery = time.Second
	// maxSources bounds the addresses remembered; past it the ones with
	// full credit are forgotten.
	maxSources = 10000
)

type loginLimiter struct {
	checks chan struct{}

	mu      sync.Mutex
	sources map[string]*rate.Limiter
}

func newLoginLimiter() *loginLimiter {
	return &loginLimiter{checks: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)), sources: map[string]*rate.Limiter{}}
}

func sourceOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// allowed reports whether the source may have its password checked now.
func (l *loginLimiter) allowed(src string) bool {
	if src == "" {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.sources[src]
	return lim == nil || lim.Tokens() >= 1
}

// failed charges a failed login to its source.
func (l *loginLimiter) failed(src string) {
	if src == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.sources[src]
	if lim == nil {
		if len(l.sources) >= maxSources {
			for k, v := range l.sources {
				if v.Tokens() >= failBurst {
					delete(l.sources, k)
				}
			}
		}
		lim = rate.NewLimiter(rate.Every(failEvery), failBurst)
		l.sources[src] = lim
	}
	lim.Allow()
}

// check runs f as one of the password checks allowed at once; ctx's error
// if its turn did not come first.
func (l *loginLimiter) check(ctx context.Context, f func()) error {
	select {
	case l.checks <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.checks }()
	f()
	return nil
}
