// Package ui serves Bifrost's status page: one HTML page (plain HTML, CSS and
// a little JavaScript embedded in the binary, no build step) that polls a JSON
// document of the cluster as one process sees it: members and their health,
// ranges with replicas, leaders and sizes, sessions online per frontend, and
// message rates from the frontends' counters.
//
// The handler reads a Source; NewNodeSource builds one from the objects of a
// running process. The page and the document hold only what the Source
// read just now: nothing is stored, and every figure the process cannot know
// is shown as unknown rather than guessed.
package ui

import (
	"context"
	"embed"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// StatusPath is where the JSON document is served.
const StatusPath = "/api/v1/status"

// snapshotTimeout bounds one reading of the Source.
const snapshotTimeout = 5 * time.Second

//go:embed static
var static embed.FS

// page is index.html with its style sheet and script inlined, so that it is
// one response whatever path prefix the handler is mounted under.
var page = func() []byte {
	read := func(name string) string {
		b, err := static.ReadFile("static/" + name)
		if err != nil {
			panic(err) // embedded at build time
		}
		return string(b)
	}
	html := read("index.html")
	html = strings.Replace(html, "/*STYLE*/", read("status.css"), 1)
	html = strings.Replace(html, "/*SCRIPT*/", read("status.js"), 1)
	return []byte(html)
}()

// Handler serves the status page at "/" and its JSON document at
// StatusPath (GET and HEAD); any other path is 404. A nil log discards.
func Handler(src Source, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{src: src, log: log, rates: newRates()}
}

type handler struct {
	src   Source
	log   *slog.Logger
	rates *rates
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" && r.URL.Path != StatusPath {
		writeError(w, http.StatusNotFound, "no such page: the status page is at / and its document at "+StatusPath)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here: use GET")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Path == "/" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(page)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), snapshotTimeout)
	defer cancel()
	snap, err := h.src.Snapshot(ctx)
	if err != nil {
		h.log.Warn("status page: reading the cluster failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "the cluster's status cannot be read now: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, status(snap, h.rates, time.Now()))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
