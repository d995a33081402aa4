package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt/internal/jsonpost"
	"github.com/bifrost-mq/bifrost/mqtt/internal/promreg"
)

// WebhookConfig configures the HTTP auth provider. Zero values take the
// documented defaults.
type WebhookConfig struct {
	// URL is the base of the webhook: CONNECTs are POSTed to
	// URL/authenticate (with an MQTT 5 authentication method, each step to
	// URL/enhanced-auth), publish and subscribe checks to URL/check. http
	// or https. Required.
	URL string
	// Timeout bounds each call; a call that takes longer denies. Default 2s.
	Timeout time.Duration
	// CacheTTL is how long a permission decision (allow or deny) is reused
	// for the same tenant, user, action, topic, QoS and retain flag.
	// Default 30s; negative: no cache. Authentication is never cached.
	CacheTTL time.Duration
	// CacheSize bounds the cached decisions; the least recently used go
	// first. Default 10000.
	CacheSize int
	// Client makes the calls. Default: a client that follows no redirects.
	Client *http.Client

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Validate reports a missing or bad URL and negative sizes.
func (c WebhookConfig) Validate() error {
	if err := jsonpost.CheckURL(c.URL); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("auth: webhook timeout %v must not be negative", c.Timeout)
	}
	if c.CacheSize < 0 {
		return fmt.Errorf("auth: webhook cache size %d must not be negative", c.CacheSize)
	}
	return nil
}

// Webhook is the HTTP auth provider: an Authenticator and Checker that asks
// a web service, and fails closed. Safe for concurrent use.
type Webhook struct {
	authURL, checkURL string
	enhancedURL       string
	timeout           time.Duration
	client            *http.Client
	cache             *decisionCache // nil: off
	log               *slog.Logger
	m                 *webhookMetrics
}

// NewWebhook builds the HTTP auth provider of cfg.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = 30 * time.Second
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 10000
	}
	if cfg.Client == nil {
		cfg.Client = jsonpost.NewClient()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Webhook{timeout: cfg.Timeout, client: cfg.Client, log: cfg.Logger, m: newWebhookMetrics(cfg.Registerer)}
	w.authURL, _ = url.JoinPath(cfg.URL, "authenticate") // parsed by Validate
	w.checkURL, _ = url.JoinPath(cfg.URL, "check")
	w.enhancedURL, _ = url.JoinPath(cfg.URL, "enhanced-auth")
	if cfg.CacheTTL > 0 {
		w.cache = newDecisionCache(cfg.CacheSize, cfg.CacheTTL)
	}
	return w, nil
}

// AuthenticateRequest is the JSON body POSTed to URL/authenticate.
type AuthenticateRequest struct {
	ClientID string `json:"client_id"`
	// Username and Password are absent when the CONNECT had none. A
	// password that is not UTF-8 is sent as PasswordBase64 instead.
	Username        *string `json:"username,omitempty"`
	Password        *string `json:"password,omitempty"`
	PasswordBase64  string  `json:"password_base64,omitempty"`
	RemoteAddr      string  `json:"remote_addr,omitempty"`
	ProtocolVersion byte    `json:"protocol_version"`
	// CertSubject is the verified client certificate's subject, if any.
	CertSubject string `json:"cert_subject,omitempty"`
}

// AuthenticateResponse is the webhook's answer to an AuthenticateRequest.
type AuthenticateResponse struct {
	// Allow is required; false refuses the CONNECT (not authorized).
	Allow *bool `json:"allow"`
	// Reason "bad_credentials" refuses with bad username or password
	// instead of not authorized.
	Reason string `json:"reason,omitempty"`
	// Tenant of the client; default: its listener's (Credentials.FallbackTenant).
	Tenant string `json:"tenant,omitempty"`
	// User the client is known as (owns its session); "" is anonymous.
	User string `json:"user,omitempty"`
}

// CheckRequest is the JSON body POSTed to URL/check.
type CheckRequest struct {
	Tenant   string `json:"tenant"`
	ClientID string `json:"client_id"`
	User     string `json:"user"`
	Action   string `json:"action"` // "publish" or "subscribe"
	Topic    string `json:"topic"`
	QoS      byte   `json:"qos"`
	Retain   bool   `json:"retain"`
}

// CheckResponse is the webhook's answer to a CheckRequest.
type CheckResponse struct {
	// Allow is required.
	Allow *bool `json:"allow"`
}

// Authenticate asks URL/authenticate. A timeout, an error, a non-2xx status
// or an answer that does not decode is ErrNotAuthorized.
func (w *Webhook) Authenticate(ctx context.Context, c Credentials) (Identity, error) {
	var resp AuthenticateResponse
	if err := w.call(ctx, "authenticate", w.authURL, authenticateRequest(c), &resp, resp.check, func() bool { return *resp.Allow }); err != nil {
		if err := ctx.Err(); err != nil {
			return Identity{}, err
		}
		return Identity{}, ErrNotAuthorized
	}
	return resp.identity(c.ClientID)
}

func authenticateRequest(c Credentials) AuthenticateRequest {
	req := AuthenticateRequest{ClientID: c.ClientID, ProtocolVersion: c.ProtocolVersion, CertSubject: c.CertSubject}
	if c.Remote != nil {
		req.RemoteAddr = c.Remote.String()
	}
	if c.HasUsername {
		req.Username = &c.Username
	}
	if c.HasPassword {
		if utf8.Valid(c.Password) {
			pw := string(c.Password)
			req.Password = &pw
		} else {
			req.PasswordBase64 = base64.StdEncoding.EncodeToString(c.Password)
		}
	}
	return req
}

// check reports an answer that decides nothing, or names a bad tenant.
func (r *AuthenticateResponse) check() error {
	switch {
	case r.Allow == nil:
		return errors.New(`no "allow" in the answer`)
	case r.Tenant != "" && ValidateTenant(r.Tenant) != nil:
		return fmt.Errorf("bad tenant: %w", ValidateTenant(r.Tenant))
	}
	return nil
}

// identity is the decision of a checked answer.
func (r *AuthenticateResponse) identity(clientID string) (Identity, error) {
	if !*r.Allow {
		if r.Reason == "bad_credentials" {
			return Identity{}, ErrBadCredentials
		}
		return Identity{}, ErrNotAuthorized
	}
	// An empty tenant is the listener's: the broker fills it in.
	return Identity{Tenant: r.Tenant, ClientID: clientID, Username: r.User}, nil
}

// Check asks URL/check, or the cache. A timeout, an error, a non-2xx status
// or an answer that does not decode denies, and is not cached.
func (w *Webhook) Check(ctx context.Context, id Identity, r Request) bool {
	if r.Action != Publish && r.Action != Subscribe {
		return false
	}
	key := keyOf(id, r)
	if w.cache != nil {
		if allow, ok := w.cache.get(key); ok {
			w.m.cache.WithLabelValues("hit").Inc()
			return allow
		}
		w.m.cache.WithLabelValues("miss").Inc()
	}
	req := CheckRequest{Tenant: id.Tenant, ClientID: id.ClientID, User: id.Username, Action: r.Action.String(), Topic: r.Topic, QoS: r.QoS, Retain: r.Retain}
	var resp CheckResponse
	if err := w.call(ctx, "check", w.checkURL, req, &resp, func() error {
		if resp.Allow == nil {
			return errors.New(`no "allow" in the answer`)
		}
		return nil
	}, func() bool { return *resp.Allow }); err != nil {
		return false
	}
	if w.cache != nil {
		w.cache.put(key, *resp.Allow)
	}
	return *resp.Allow
}

// Authorize is Check of a QoS 0, not retained request.
func (w *Webhook) Authorize(id Identity, action Action, topic string) bool {
	return w.Check(context.Background(), id, Request{Action: action, Topic: topic})
}

// call POSTs body as JSON to u and decodes a 2xx answer into out, which
// valid checks; allowed reads the decision for the metrics. Every failure
// is logged and counted.
func (w *Webhook) call(ctx context.Context, name, u string, body, out any, valid func() error, allowed func() bool) error {
	start := time.Now()
	err := jsonpost.Post(ctx, w.client, u, w.timeout, body, out)
	if err == nil {
		err = valid()
		if err != nil {
			err = fmt.Errorf("bad answer: %w", err)
		}
	}
	w.m.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
	result := "error"
	switch {
	case err == nil && allowed():
		result = "allow"
	case err == nil:
		result = "deny"
	case errors.Is(err, context.DeadlineExceeded):
		result = "timeout"
	}
	w.m.calls.WithLabelValues(name, result).Inc()
	if err != nil {
		w.log.Warn("auth webhook failed; denied", "call", name, "url", u, "err", err)
	}
	return err
}

type webhookMetrics struct {
	calls   *prometheus.CounterVec
	latency *prometheus.HistogramVec
	cache   *prometheus.CounterVec
}

func newWebhookMetrics(reg prometheus.Registerer) *webhookMetrics {
	return &webhookMetrics{
		calls: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_auth_webhook_calls_total", Help: "Calls to the auth webhook by call (authenticate, enhanced_auth, check) and result (allow, deny, timeout, error: no 2xx or a bad answer); all but allow deny.",
		}, []string{"call", "result"})),
		latency: promreg.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bifrost_auth_webhook_call_duration_seconds", Help: "Duration of calls to the auth webhook, by call.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"call"})),
		cache: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_auth_webhook_cache_total", Help: "Permission checks answered from the auth webhook's decision cache (hit) or not (miss).",
		}, []string{"result"})),
	}
}

// EnhancedAuthRequest is the JSON body POSTed to URL/enhanced-auth, one per
// step of MQTT 5 enhanced authentication.
type EnhancedAuthRequest struct {
	AuthenticateRequest
	Method string `json:"method"`
	// Step is 0 for the CONNECT's (or the re-authentication's first AUTH's)
	// data, then 1, 2, ... for the client's answers.
	Step int `json:"step"`
	// Data is base64 in JSON.
	Data []byte `json:"data,omitempty"`
}

// EnhancedAuthResponse is the webhook's answer to an EnhancedAuthRequest:
// either Continue with Data for the client, or a decision as in
// AuthenticateResponse (Reason may also be "bad_method").
type EnhancedAuthResponse struct {
	AuthenticateResponse
	Continue bool   `json:"continue,omitempty"`
	Data     []byte `json:"data,omitempty"`
}

// AuthStep asks URL/enhanced-auth. A timeout, an error, a non-2xx status or
// an answer that neither continues nor decides is ErrNotAuthorized.
func (w *Webhook) AuthStep(ctx context.Context, c Credentials, method string, step int, data []byte) (AuthStep, error) {
	req := EnhancedAuthRequest{AuthenticateRequest: authenticateRequest(c), Method: method, Step: step, Data: data}
	var resp EnhancedAuthResponse
	if err := w.call(ctx, "enhanced_auth", w.enhancedURL, req, &resp, func() error {
		if !resp.Continue {
			return resp.AuthenticateResponse.check()
		}
		return nil
	}, func() bool { return resp.Continue || *resp.Allow }); err != nil {
		if err := ctx.Err(); err != nil {
			return AuthStep{}, err
		}
		return AuthStep{}, ErrNotAuthorized
	}
	if resp.Continue {
		return AuthStep{Data: resp.Data}, nil
	}
	if !*resp.Allow && resp.Reason == "bad_method" {
		return AuthStep{}, ErrBadAuthMethod
	}
	id, err := resp.AuthenticateResponse.identity(c.ClientID)
	if err != nil {
		return AuthStep{}, err
	}
	return AuthStep{Done: true, Identity: id, Data: resp.Data}, nil
}
