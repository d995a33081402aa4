package main

import (
	"errors"
	"flag"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/events"
)

// pluginFlags choose the frontend's plug-ins (docs/plugins.md) where they
// are not the built-in defaults.
type pluginFlags struct {
	authWebhook         string
	authWebhookTimeout  time.Duration
	authWebhookCacheTTL time.Duration
	eventsLog           bool
	eventsWebhook       string
}

func (p *pluginFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.authWebhook, "auth-webhook", "", "base URL of an HTTP auth provider: CONNECTs are POSTed to URL/authenticate, publishes and subscribes to URL/check (docs/plugins.md); replaces --users-file and the [[acl]] rules")
	fs.DurationVar(&p.authWebhookTimeout, "auth-webhook-timeout", 2*time.Second, "time limit of a call to --auth-webhook; a call that takes longer denies")
	fs.BoolVar(&p.eventsLog, "events-log", false, "log client events (connect, disconnect, kicked, denied, dropped, will published) at info, message \"mqtt event\"")
	fs.StringVar(&p.eventsWebhook, "events-webhook", "", "URL that client events are POSTed to as JSON batches ({\"events\": [...]}; docs/plugins.md); a collector that does not keep up loses events, counted in bifrost_events_webhook_dropped_total")
	fs.DurationVar(&p.authWebhookCacheTTL, "auth-webhook-cache-ttl", 30*time.Second, "how long --auth-webhook's publish and subscribe decisions are reused (0: not cached)")
}

// authProvider returns the auth provider of the flags: fileAuth (the users
// file and ACL, or allow-all), or the webhook. usesFile says whether the
// users file or ACL rules were given, which the webhook replaces.
func (p *pluginFlags) authProvider(fileAuth auth.Authenticator, usesFile bool, log *slog.Logger, reg prometheus.Registerer) (auth.Authenticator, error) {
	if p.authWebhook == "" {
		return fileAuth, nil
	}
	if usesFile {
		return nil, errors.New("--auth-webhook replaces --users-file and the [[acl]] rules: give one or the other")
	}
	if p.authWebhookTimeout <= 0 {
		return nil, errors.New("invalid value for -auth-webhook-timeout: must be more than 0")
	}
	if p.authWebhookCacheTTL < 0 {
		return nil, errors.New("invalid value for -auth-webhook-cache-ttl: must not be negative")
	}
	ttl := p.authWebhookCacheTTL
	if ttl == 0 {
		ttl = -1 // off
	}
	return auth.NewWebhook(auth.WebhookConfig{URL: p.authWebhook, Timeout: p.authWebhookTimeout, CacheTTL: ttl, Logger: log, Registerer: reg})
}

// eventCollector returns the event collectors of the flags, nil for none.
// The frontend closes it.
func (p *pluginFlags) eventCollector(log *slog.Logger, reg prometheus.Registerer) (events.Collector, error) {
	var cs []events.Collector
	if p.eventsLog {
		cs = append(cs, events.Log(log))
	}
	if p.eventsWebhook != "" {
		w, err := events.NewWebhook(events.WebhookConfig{URL: p.eventsWebhook, Logger: log, Registerer: reg})
		if err != nil {
			return nil, err
		}
		cs = append(cs, w)
	}
	return events.Multi(cs...), nil
}
