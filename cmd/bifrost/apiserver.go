package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/api"
	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ui"
)

// apiFlags are the HTTP API's flags, on every process that runs a frontend.
type apiFlags struct {
	addr, token, tokenFile string
}

func (a *apiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.addr, "api", api.DefaultAddr, "HTTP API address, /api/v1/ and /api/openapi.json (empty: off); a non-loopback address needs a token")
	fs.StringVar(&a.token, "api-token", "", "bearer token the HTTP API requires (prefer --api-token-file)")
	fs.StringVar(&a.tokenFile, "api-token-file", "", "file whose first line is the bearer token the HTTP API requires")
}

// config checks the flags and returns the API's configuration without
// its broker and stores; ok is false when the API is off.
func (a *apiFlags) config() (cfg api.Config, ok bool, err error) {
	if a.addr == "" {
		return api.Config{}, false, nil
	}
	if a.token != "" && a.tokenFile != "" {
		return api.Config{}, false, errors.New("--api-token and --api-token-file: give one")
	}
	token := a.token
	if a.tokenFile != "" {
		var err error
		if token, err = readTokenFile(a.tokenFile); err != nil {
			return api.Config{}, false, err
		}
	}
	// Checked before anything starts: an exposed address without a token
	// is a usage error.
	if err := api.CheckAddr(a.addr, token); err != nil {
		return api.Config{}, false, err
	}
	return api.Config{Addr: a.addr, Token: token}, true, nil
}

// readTokenFile reads a bearer token: the file's first line.
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--api-token-file: %v", err)
	}
	token, _, _ := strings.Cut(string(b), "\n")
	if token = strings.TrimSpace(token); token == "" {
		return "", fmt.Errorf("--api-token-file %s: empty", path)
	}
	return token, nil
}

// startAPI serves the HTTP API over a frontend, and the status page
// (package ui) of the process status describes; storeAddr names a store
// for the cluster calls, reached with creds.
func startAPI(cfg api.Config, front *mqtt.Server, storeAddr func() (string, error), creds *clustertls.Credentials,
	status ui.NodeConfig, reg *prometheus.Registry, log *slog.Logger) (*api.Server, error) {
	cfg.Broker, cfg.StoreAddr, cfg.StoreTLS, cfg.Registerer, cfg.Logger = front, storeAddr, creds, reg, log
	status.Gatherer = reg
	src, err := ui.NewNodeSource(status)
	if err != nil {
		return nil, err
	}
	cfg.UI = ui.Handler(src, log)
	srv, err := api.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, err
	}
	return srv, nil
}

// anyStore is the gRPC address of a live store the membership knows.
func anyStore(m *ranges.Membership) func() (string, error) {
	return func() (string, error) {
		for _, s := range m.Stores() {
			if s.Meta.GRPC != "" {
				return s.Meta.GRPC, nil
			}
		}
		return "", errors.New("no live store known yet")
	}
}
