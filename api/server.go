package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
	"github.com/bifrost-mq/bifrost/ranges"
)

// OpenAPI is the API's OpenAPI 3 document, served at /api/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// DefaultAddr is the API's default address.
const DefaultAddr = "127.0.0.1:8090"

// DefaultTenant is the tenant of a call that names none.
const DefaultTenant = "default"

// TenantHeader names the tenant of a call (or the query parameter tenant).
const TenantHeader = "X-Bifrost-Tenant"

// Broker is the MQTT frontend the API operates (*mqtt.Server).
type Broker interface {
	Publish(ctx context.Context, tenant string, m *mqttpb.Message) (int, error)
	SetRetained(ctx context.Context, tenant string, m *mqttpb.Message) error
	Retained(ctx context.Context, tenant, filter string, from []byte, limit int) ([]*mqttpb.Message, []byte, error)
	Session(ctx context.Context, tenant, clientID string) (*mqtt.SessionInfo, error)
	Sessions(ctx context.Context, tenant, prefix, after string, limit int) ([]*mqtt.SessionInfo, string, error)
	Subscribe(ctx context.Context, tenant, clientID, filter string, opts *inboxpb.SubOptions, retainHandling uint32) error
	Unsubscribe(ctx context.Context, tenant, clientID, filter string) (bool, error)
	Kick(ctx context.Context, tenant, clientID string) (bool, error)
}

// Config configures the API server.
type Config struct {
	// Addr is the listen address (host:port); DefaultAddr if empty.
	Addr string
	// Token, when set, is the bearer token every call but the OpenAPI
	// document and the UI's page must carry. Required unless Addr is a
	// loopback address.
	Token string
	// Broker is this process's frontend.
	Broker Broker
	// StoreAddr returns the gRPC address of a store, for the cluster calls
	// (members, ranges, split, merge, balancer).
	StoreAddr func() (string, error)
	// StoreTLS, when the cluster runs mutual TLS, are this process's
	// credentials for the stores' gRPC services.
	StoreTLS *clustertls.Credentials
	// UI, when set, serves "/" and "/api/v1/status" (the status page).
	UI http.Handler
	// Timeout bounds each call; default 15s.
	Timeout time.Duration
	// Registerer takes the API's metrics; nil: none.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Validate checks the configuration: a non-loopback address needs a token.
func (c Config) Validate() error {
	if c.Broker == nil || c.StoreAddr == nil {
		return errors.New("api: Broker and StoreAddr are required")
	}
	return CheckAddr(c.Addr, c.Token)
}

// CheckAddr checks an API address (empty: DefaultAddr) and its token: a
// non-loopback address needs one.
func CheckAddr(addr, token string) error {
	if addr == "" {
		addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("api address %q: want host:port", addr)
	}
	if token == "" && !isLoopback(host) {
		return fmt.Errorf("api address %s is not a loopback address: set a token (--api-token-file or --api-token)", addr)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server serves the HTTP API.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	routes  []route
	token   [32]byte
	m       *metrics
	http    *http.Server
	lis     net.Listener
	served  chan struct{}
	storeMu sync.Mutex
	stores  map[string]*ranges.Client
}

type route struct {
	method, pattern string
}

// New returns a server; Start listens.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "api"), mux: http.NewServeMux(), m: newMetrics(cfg.Registerer),
		token: sha256.Sum256([]byte(cfg.Token)), stores: map[string]*ranges.Client{}}
	s.register()
	return s, nil
}

// handler answers a call: a value to encode as JSON with code, or an
// error (httpError tells its status).
type handler func(r *http.Request, tenant string) (code int, body any, err error)

// register builds the routes; Routes lists them.
func (s *Server) register() {
	byPath := map[string]map[string]handler{}
	var paths []string
	add := func(method, path string, h handler) {
		if byPath[path] == nil {
			byPath[path] = map[string]handler{}
			paths = append(paths, path)
		}
		byPath[path][method] = h
		s.routes = append(s.routes, route{method, path})
	}
	add("POST", "/api/v1/publish", s.publish)
	add("GET", "/api/v1/retained", s.getRetained)
	add("PUT", "/api/v1/retained", s.setRetained)
	add("DELETE", "/api/v1/retained", s.clearRetained)
	add("GET", "/api/v1/sessions", s.listSessions)
	add("GET", "/api/v1/sessions/{client_id}", s.getSession)
	add("POST", "/api/v1/sessions/{client_id}/kick", s.kick)
	add("POST", "/api/v1/sessions/{client_id}/subscriptions", s.subscribe)
	add("DELETE", "/api/v1/sessions/{client_id}/subscriptions", s.unsubscribe)
	add("GET", "/api/v1/cluster/members", s.members)
	add("GET", "/api/v1/cluster/ranges", s.ranges)
	add("POST", "/api/v1/ranges/split", s.split)
	add("POST", "/api/v1/ranges/merge", s.merge)
	add("GET", "/api/v1/balancer", s.balancerStatus)
	add("POST", "/api/v1/balancer/pause", s.balancerControl(true))
	add("POST", "/api/v1/balancer/resume", s.balancerControl(false))
	for _, p := range paths {
		s.mux.Handle(p, s.serve(p, byPath[p]))
	}
	s.mux.Handle("/api/openapi.json", s.instrument("/api/openapi.json", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeJSON(w, http.StatusMethodNotAllowed, Error{"method " + r.Method + " not allowed"})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(OpenAPI)
	})))
	s.routes = append(s.routes, route{"GET", "/api/openapi.json"})
	if s.cfg.UI != nil {
		s.mux.Handle("/", s.instrument("/", s.cfg.UI))
		s.mux.Handle("/api/v1/status", s.instrument("/api/v1/status", s.authorized(s.cfg.UI)))
	}
	// Anything else under the API: a JSON 404.
	s.mux.Handle("/api/", s.instrument("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, Error{"no such API path: " + r.URL.Path})
	})))
}

// Routes lists the method and path pattern of every API call the server
// serves (the UI's excepted), for the test that holds the OpenAPI
// document to them.
func (s *Server) Routes() [][2]string {
	out := make([][2]string, len(s.routes))
	for i, r := range s.routes {
		out[i] = [2]string{r.method, r.pattern}
	}
	return out
}

// Handler is the server's handler (every route, authentication, metrics).
func (s *Server) Handler() http.Handler { return s.mux }

// Start listens on the configured address and serves in the background.
func (s *Server) Start() error {
	lis, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("api listen on %s: %w", s.cfg.Addr, err)
	}
	s.lis = lis
	s.http = &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		if err := s.http.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api server stopped", "err", err)
		}
	}()
	return nil
}

// Addr is the address the server listens on (after Start).
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Close stops serving, waiting briefly for calls in progress, and closes
// the connections to the stores.
func (s *Server) Close() error {
	var err error
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = s.http.Shutdown(ctx)
		cancel()
		<-s.served
	}
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	for addr, c := range s.stores {
		err = errors.Join(err, c.Close())
		delete(s.stores, addr)
	}
	return err
}

// serve dispatches one path's calls by method, after the token check.
func (s *Server) serve(path string, methods map[string]handler) http.Handler {
	var allow []string
	for m := range methods {
		allow = append(allow, m)
	}
	return s.instrument(path, s.authorized(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := methods[r.Method]
		if h == nil {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, Error{fmt.Sprintf("method %s not allowed on %s", r.Method, path)})
			return
		}
		tenant := r.URL.Query().Get("tenant")
		if tenant == "" {
			tenant = r.Header.Get(TenantHeader)
		}
		if tenant == "" {
			tenant = DefaultTenant
		}
		if strings.ContainsRune(tenant, 0) || len(tenant) > 1024 {
			writeJSON(w, http.StatusBadRequest, Error{"tenant must be free of NUL and at most 1024 bytes"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
		defer cancel()
		code, body, err := h(r.WithContext(ctx), tenant)
		if err != nil {
			code = statusOf(err)
			if code == http.StatusInternalServerError {
				s.log.Warn("api call failed", "path", r.URL.Path, "tenant", tenant, "err", err)
			}
			body = Error{err.Error()}
		}
		writeJSON(w, code, body)
	})))
}

// authorized lets a call through only with the bearer token (when one is
// configured), compared in constant time.
func (s *Server) authorized(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(given))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.token[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="bifrost"`)
			writeJSON(w, http.StatusUnauthorized, Error{"missing or wrong bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// badRequest is a user error: 400 with its message.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badf(format string, args ...any) error { return &badRequest{fmt.Sprintf(format, args...)} }

// notFound is a 404 with its message.
type notFound struct{ msg string }

func (e *notFound) Error() string { return e.msg }

// statusOf maps an error to its HTTP status: the caller's mistakes are
// 4xx, never 500.
func statusOf(err error) int {
	var bad *badRequest
	var nf *notFound
	var refused *ranges.RefusedError
	var epoch *ranges.EpochNotMatchError
	switch {
	case errors.As(err, &bad), errors.Is(err, mqtt.ErrInvalid), errors.Is(err, ranges.ErrBadRequest):
		return http.StatusBadRequest
	case errors.As(err, &nf), errors.Is(err, mqtt.ErrNoSession), errors.Is(err, ranges.ErrUnknownRange),
		errors.Is(err, ranges.ErrUnknownStore):
		return http.StatusNotFound
	case errors.Is(err, mqtt.ErrRefused), errors.As(err, &refused), errors.As(err, &epoch):
		return http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ranges.ErrUnavailable), errors.Is(err, ranges.ErrNoRange):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	if code == http.StatusNoContent {
		w.WriteHeader(code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}

// maxBody bounds a request body (a publish's payload with its base64).
const maxBody = 4 << 20

// decodeBody reads a JSON body strictly: unknown fields and trailing data
// are errors.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badf("malformed JSON body: %v", err)
	}
	if dec.More() {
		return badf("malformed JSON body: data after the object")
	}
	return nil
}

// intParam is an integer query parameter within [lo, hi], def if absent.
func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, badf("parameter %s=%q: want an integer from %d to %d", name, v, lo, hi)
	}
	return n, nil
}

// store is a client of a store's gRPC services.
func (s *Server) store() (*ranges.Client, error) {
	addr, err := s.cfg.StoreAddr()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ranges.ErrUnavailable, err)
	}
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	if c := s.stores[addr]; c != nil {
		return c, nil
	}
	c, err := ranges.DialTLS(addr, s.cfg.StoreTLS)
	if err != nil {
		return nil, err
	}
	s.stores[addr] = c
	return c, nil
}
