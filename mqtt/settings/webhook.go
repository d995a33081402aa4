package settings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	// URL is called GET URL?tenant=<name>; required.
	URL string
	// Fallback gives the settings the answer's keys apply over, and those
	// used when the call fails; required (the config file's Static).
	Fallback Provider
	// Timeout bounds a call. Default 2s.
	Timeout time.Duration
	// CacheTTL is how long an answer is used before the next call; a
	// failed call's fallback is used for at most 5s of it. Default 60s.
	CacheTTL time.Duration
	// MaxTenants bounds the cache; past it, the entries that expired
	// first go. Default 10000.
	MaxTenants int
	Client     *http.Client
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Webhook asks a web service for each tenant's settings and caches its
// answers.
type Webhook struct {
	cfg   WebhookConfig
	calls *prometheus.CounterVec

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	s       Settings
	expires time.Time
}

// failedTTL bounds how long a failed call's fallback is kept, so that a
// webhook that comes back is heard soon.
const failedTTL = 5 * time.Second

// NewWebhook checks cfg and builds the webhook.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("settings webhook: want an http or https URL, got %q", cfg.URL)
	}
	if cfg.Fallback == nil {
		return nil, errors.New("settings webhook: a fallback provider is required")
	}
	if cfg.Timeout < 0 || cfg.CacheTTL < 0 {
		return nil, errors.New("settings webhook: timeout and cache TTL must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = 60 * time.Second
	}
	if cfg.MaxTenants <= 0 {
		cfg.MaxTenants = 10000
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Webhook{cfg: cfg, cache: map[string]cached{}, calls: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bifrost_settings_webhook_calls_total", Help: "Calls of the settings webhook, by result (ok, error).",
	}, []string{"result"})}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(w.calls); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			w.calls = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return w, nil
}

// Settings implements Provider: the cached answer, or the webhook's, or on
// failure the fallback's.
func (w *Webhook) Settings(ctx context.Context, tenant string) Settings {
	now := time.Now()
	w.mu.Lock()
	c, ok := w.cache[tenant]
	w.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.s
	}
	base := w.cfg.Fallback.Settings(ctx, tenant)
	s, err := w.call(ctx, tenant, base)
	ttl := w.cfg.CacheTTL
	if err != nil {
		w.calls.WithLabelValues("error").Inc()
		w.cfg.Logger.Warn("settings webhook failed; the config file's settings apply", "tenant", tenant, "err", err)
		s, ttl = base, min(ttl, failedTTL)
	} else {
		w.calls.WithLabelValues("ok").Inc()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.cache) >= w.cfg.MaxTenants {
		for k, e := range w.cache {
			if !now.Before(e.expires) {
				delete(w.cache, k)
			}
		}
		if len(w.cache) >= w.cfg.MaxTenants {
			clear(w.cache)
		}
	}
	w.cache[tenant] = cached{s: s, expires: now.Add(ttl)}
	return s
}

func (w *Webhook) call(ctx context.Context, tenant string, base Settings) (Settings, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	u, _ := url.Parse(w.cfg.URL)
	q := u.Query()
	q.Set("tenant", tenant)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return base, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return base, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return base, fmt.Errorf("status %s", resp.Status)
	}
	var values map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&values); err != nil {
		return base, fmt.Errorf("bad answer: %w", err)
	}
	s := base
	if err := s.Apply(values); err != nil {
		return base, fmt.Errorf("bad answer: %w", err)
	}
	return s, nil
}
