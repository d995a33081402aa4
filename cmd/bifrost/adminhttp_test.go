package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestAdminHTTPProfiles: --pprof adds Go's runtime profiles to the admin
// HTTP server; without it they are not served, and /metrics and /healthz
// are served either way.
func TestAdminHTTPProfiles(t *testing.T) {
	get := func(addr, path string) int {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, withPprof := range []bool{false, true} {
		addr := rangestest.FreeAddr(t)
		srv, err := serveAdminHTTP(addr, prometheus.NewRegistry(), log, withPprof, func() error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		want := http.StatusNotFound
		if withPprof {
			want = http.StatusOK
		}
		for path, code := range map[string]int{"/metrics": 200, "/healthz": 200, "/debug/pprof/": want, "/debug/pprof/cmdline": want} {
			if got := get(addr, path); got != code {
				t.Errorf("pprof %v: GET %s = %d, want %d", withPprof, path, got, code)
			}
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
