package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/events"
	"github.com/bifrost-mq/bifrost/mqtt/settings"
)

// pluginFlags choose the frontend's plug-ins (docs/plugins.md) where they
// are not the built-in defaults.
type pluginFlags struct {
	authWebhook         string
	authWebhookTimeout  time.Duration
	authWebhookCacheTTL time.Duration
	eventsLog           bool
	eventsWebhook       string
	// settings is the config file's [tenant-defaults] and [tenants.<name>]
	// tables; settingsWebhook may answer over them.
	settings                settings.Static
	settingsWebhook         string
	settingsWebhookTimeout  time.Duration
	settingsWebhookCacheTTL time.Duration
}

func (p *pluginFlags) register(fs *flag.FlagSet) {
	p.settings = settings.Static{Defaults: settings.Default()}
	fs.StringVar(&p.authWebhook, "auth-webhook", "", "base URL of an HTTP auth provider: CONNECTs are POSTed to URL/authenticate, publishes and subscribes to URL/check (docs/plugins.md); replaces --users-file and the [[acl]] rules")
	fs.DurationVar(&p.authWebhookTimeout, "auth-webhook-timeout", 2*time.Second, "time limit of a call to --auth-webhook; a call that takes longer denies")
	fs.BoolVar(&p.eventsLog, "events-log", false, "log client events (connect, disconnect, kicked, denied, dropped, will published) at info, message \"mqtt event\"")
	fs.StringVar(&p.eventsWebhook, "events-webhook", "", "URL that client events are POSTed to as JSON batches ({\"events\": [...]}; docs/plugins.md); a collector that does not keep up loses events, counted in bifrost_events_webhook_dropped_total")
	fs.DurationVar(&p.authWebhookCacheTTL, "auth-webhook-cache-ttl", 30*time.Second, "how long --auth-webhook's publish and subscribe decisions are reused (0: not cached)")
	fs.StringVar(&p.settingsWebhook, "settings-webhook", "", "URL of an HTTP setting provider: a tenant's settings are asked with GET URL?tenant=<name> and apply over the config file's [tenant-defaults] and [tenants.<name>] tables; a call that fails uses those (docs/plugins.md)")
	fs.DurationVar(&p.settingsWebhookTimeout, "settings-webhook-timeout", 2*time.Second, "time limit of a call to --settings-webhook; a call that takes longer uses the config file's settings")
	fs.DurationVar(&p.settingsWebhookCacheTTL, "settings-webhook-cache-ttl", 60*time.Second, "how long an answer of --settings-webhook is used for its tenant")
}

// settingsProvider returns the setting provider of the config file and
// flags: the config file's settings, or the webhook over them.
func (p *pluginFlags) settingsProvider(log *slog.Logger, reg prometheus.Registerer) (settings.Provider, error) {
	if p.settingsWebhook == "" {
		return &p.settings, nil
	}
	if p.settingsWebhookTimeout <= 0 || p.settingsWebhookCacheTTL <= 0 {
		return nil, errors.New("invalid value for -settings-webhook-timeout or -settings-webhook-cache-ttl: must be more than 0")
	}
	return settings.NewWebhook(settings.WebhookConfig{URL: p.settingsWebhook, Fallback: &p.settings,
		Timeout: p.settingsWebhookTimeout, CacheTTL: p.settingsWebhookCacheTTL, Logger: log, Registerer: reg})
}

// configFileSettings takes the [tenant-defaults] and [tenants.<name>]
// tables out of a config file's settings: every tenant has the defaults,
// and a named tenant its own table's values over them.
func (p *pluginFlags) configFileSettings(values map[string]any) error {
	p.settings = settings.Static{Defaults: settings.Default()}
	t, found, err := takeTable[map[string]any](values, "tenant-defaults", "a [tenant-defaults] table")
	if err != nil {
		return err
	}
	if found {
		if err := p.settings.Defaults.Apply(t); err != nil {
			return fmt.Errorf("tenant-defaults: %v", err)
		}
	}
	ts, found, err := takeTable[map[string]any](values, "tenants", "[tenants.<name>] tables")
	if err != nil || !found {
		return err
	}
	p.settings.Tenants = map[string]settings.Settings{}
	for name, raw := range ts {
		if err := auth.ValidateTenant(name); err != nil {
			return fmt.Errorf("tenants.%s: %v", name, err)
		}
		t, ok := raw.(map[string]any)
		if !ok {
			return fmt.Errorf("tenants.%s: want a [tenants.%s] table", name, name)
		}
		s := p.settings.Defaults
		if err := s.Apply(t); err != nil {
			return fmt.Errorf("tenants.%s: %v", name, err)
		}
		p.settings.Tenants[name] = s
	}
	return nil
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
