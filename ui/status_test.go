package ui_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/ui"
)

func getStatus(t *testing.T, base string) (*ui.Status, error) {
	t.Helper()
	resp, err := http.Get(base + ui.StatusPath)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		return nil, fmt.Errorf("GET %s: %s, %s", ui.StatusPath, resp.Status, resp.Header.Get("Content-Type"))
	}
	var s ui.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

func frontend(s *ui.Status, name string) *ui.Frontend {
	for i := range s.Frontends {
		if s.Frontends[i].Name == name {
			return &s.Frontends[i]
		}
	}
	return nil
}

// TestStatusOfRealCluster reads /api/v1/status of a standalone node with a
// second frontend: the members, the ranges as `bifrost admin ranges` lists
// them (after splits), the sessions online on each frontend (the other one's
// from its $SYS figures) and the message rate from the counters.
func TestStatusOfRealCluster(t *testing.T) {
	tc := startCluster(t)
	tc.split(t, "k10", "k20", "k30")
	sub := connect(t, tc.front, "sub")
	if tok := sub.Subscribe("t/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pub := connect(t, tc.front, "pub")
	connect(t, tc.gwFront, "elsewhere")

	// The first reading is the first sample of the counters: no rate yet.
	tFirst := time.Now()
	first, err := getStatus(t, tc.page.URL)
	if err != nil {
		t.Fatal(err)
	}
	if f := frontend(first, tc.node.Name()); f == nil || f.InPerSec != nil {
		t.Fatalf("first reading: want this node's frontend with no rate yet, got %+v", f)
	}
	publish := func(n int) {
		for i := 0; i < n; i++ {
			if tok := pub.Publish("t/x", 1, false, "m"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
	}
	const published = 40
	publish(published)

	var s *ui.Status
	waitFor(t, 30*time.Second, func() error {
		var err error
		if s, err = getStatus(t, tc.page.URL); err != nil {
			return err
		}
		local, other := frontend(s, tc.node.Name()), frontend(s, tc.gwName)
		switch {
		case local == nil || other == nil:
			return fmt.Errorf("frontends %+v: want %s and %s", s.Frontends, tc.node.Name(), tc.gwName)
		case local.Sessions == nil || *local.Sessions != 2 || local.From != "metrics":
			return fmt.Errorf("this node's frontend: %+v, want 2 sessions from its metrics", local)
		case other.Sessions == nil || *other.Sessions != 1 || other.From != "$SYS":
			return fmt.Errorf("the other frontend: %+v, want 1 session from $SYS", other)
		case local.MessagesIn == nil || *local.MessagesIn != published || local.MessagesOut == nil || *local.MessagesOut != published:
			return fmt.Errorf("this node's frontend: %+v, want %d messages in and out", local, published)
		case s.Totals.Sessions != 3:
			return fmt.Errorf("totals %+v: want 3 sessions", s.Totals)
		}
		return nil
	})

	// More messages, then readings until one is a second past the sample
	// before them: its rate is over a pair of samples at least a second
	// apart (so at most all the messages in a second), both taken since
	// tFirst (so at least the new ones over that time).
	const more = 30
	publish(more)
	waitFor(t, 30*time.Second, func() error {
		var err error
		if s, err = getStatus(t, tc.page.URL); err != nil {
			return err
		}
		if f := frontend(s, tc.node.Name()); f == nil || f.InPerSec == nil || *f.InPerSec == 0 || *f.MessagesIn != published+more {
			return fmt.Errorf("this node's frontend: %+v, want a rate over the new messages", f)
		}
		return nil
	})
	local := frontend(s, tc.node.Name())
	low, high := more/time.Since(tFirst).Seconds(), float64(published+more)
	if *local.InPerSec < low || *local.InPerSec > high || *local.OutPerSec < 0 || *local.OutPerSec > high {
		t.Fatalf("rates in %v out %v /s: want in between %v and %v, out at most %v", *local.InPerSec, *local.OutPerSec, low, high, high)
	}
	if s.Totals.InPerSec != *local.InPerSec+valueOr(frontend(s, tc.gwName).InPerSec) {
		t.Fatalf("totals %+v: want the sum of the frontends' rates", s.Totals)
	}

	// Members: the standalone (a store with a frontend) and the frontend.
	names := map[string]ui.Member{}
	for _, m := range s.Members {
		names[m.Name] = m
	}
	if m := names[tc.node.Name()]; m.Role != "store" || !m.MQTT || m.Health != "alive" || m.StoreID != ui.StoreID(tc.node.Store().ID()) || m.GRPC != tc.node.GRPCAddr() {
		t.Fatalf("the standalone member: %+v", m)
	}
	if m := names[tc.gwName]; m.Role != "frontend" || !m.MQTT || m.Health != "alive" || m.StoreID != 0 {
		t.Fatalf("the frontend member: %+v", m)
	}
	// Store IDs are random 64-bit numbers: strings in JSON, for JavaScript.
	resp, err := http.Get(tc.page.URL + ui.StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if id := fmt.Sprintf(`"store_id":"%d"`, tc.node.Store().ID()); !strings.Contains(string(raw), id) {
		t.Fatalf("the document has no %s: %s", id, raw)
	}
	if len(s.Members) != 2 {
		t.Fatalf("members %+v: want 2", s.Members)
	}

	// Ranges: as `bifrost admin ranges` lists them.
	want := []string{}
	for _, info := range tc.adminRanges(t) {
		d := info.Range
		want = append(want, fmt.Sprintf("%d %s [%s,%s) ver %d", d.Id, strings.ToLower(strings.TrimPrefix(d.Keyspace.String(), "KEYSPACE_")), d.Start, d.End, d.Ver))
	}
	got := []string{}
	kvStarts := []string{}
	store := names[tc.node.Name()].StoreID
	for _, r := range s.Ranges {
		got = append(got, fmt.Sprintf("%d %s [%s,%s) ver %d", r.ID, r.Keyspace, r.Start, r.End, r.Ver))
		if r.Keyspace == "kv" {
			kvStarts = append(kvStarts, r.Start)
		}
		if len(r.Replicas) != 1 || r.Replicas[0] != store || r.State != "normal" {
			t.Errorf("range %d: replicas %v state %s, want [%d] normal", r.ID, r.Replicas, r.State, store)
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ranges:\n%s\nwant (admin ranges):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Join(kvStarts, ",") != ",k10,k20,k30" {
		t.Fatalf("kv ranges start at %q, want the three splits", kvStarts)
	}
	ks := map[string]ui.Keyspace{}
	for _, k := range s.Keyspaces {
		ks[k.Name] = k
	}
	for _, name := range []string{"kv", "dist", "inbox", "retain"} {
		if ks[name].Ranges == 0 || ks[name].Degraded != 0 {
			t.Errorf("keyspace %s: %+v", name, ks[name])
		}
	}
	if ks["kv"].Ranges != 4 {
		t.Errorf("kv: %d ranges, want 4", ks["kv"].Ranges)
	}
	if m := names[tc.node.Name()]; m.Replicas != len(s.Ranges) {
		t.Errorf("the standalone holds %d replicas, want all %d ranges", m.Replicas, len(s.Ranges))
	}
	// Leaders are learnt from the stores; each range has one (one store).
	waitFor(t, 15*time.Second, func() error {
		s, err := getStatus(t, tc.page.URL)
		if err != nil {
			return err
		}
		for _, r := range s.Ranges {
			if r.Leader != store {
				return fmt.Errorf("range %d: leader %d, want store %d", r.ID, r.Leader, store)
			}
		}
		if m := frontend(s, tc.node.Name()); m == nil {
			return fmt.Errorf("no frontend %s", tc.node.Name())
		}
		return nil
	})
}

// TestStatusOnFrontend reads /api/v1/status of a frontend process (a
// gateway, no store): the same ranges and members, its own sessions from its
// metrics and the standalone's from $SYS.
func TestStatusOnFrontend(t *testing.T) {
	tc := startCluster(t)
	connect(t, tc.front, "a")
	connect(t, tc.gwFront, "b")
	connect(t, tc.gwFront, "c")
	want := len(tc.adminRanges(t))
	waitFor(t, 30*time.Second, func() error {
		s, err := getStatus(t, tc.gwPage.URL)
		if err != nil {
			return err
		}
		local, other := frontend(s, tc.gwName), frontend(s, tc.node.Name())
		switch {
		case s.Node != tc.gwName:
			return fmt.Errorf("node %q, want %q", s.Node, tc.gwName)
		case local == nil || local.Sessions == nil || *local.Sessions != 2 || local.From != "metrics":
			return fmt.Errorf("this frontend: %+v, want 2 sessions from its metrics", local)
		case other == nil || other.Sessions == nil || *other.Sessions != 1 || other.From != "$SYS":
			return fmt.Errorf("the standalone's frontend: %+v, want 1 session from $SYS", other)
		case len(s.Ranges) != want || len(s.Members) != 2:
			return fmt.Errorf("%d ranges and %d members, want %d and 2", len(s.Ranges), len(s.Members), want)
		}
		return nil
	})
}

// TestStatusPageRequests: the handler serves the page and the document to
// GET and HEAD only, and answers anything else with a JSON error.
func TestStatusPageRequests(t *testing.T) {
	tc := startCluster(t)
	for _, tt := range []struct {
		method, path string
		code         int
		contentType  string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/", 200, "text/html; charset=utf-8"},
		{"GET", ui.StatusPath, 200, "application/json"},
		{"POST", ui.StatusPath, 405, "application/json"},
		{"DELETE", "/", 405, "application/json"},
		{"GET", "/nope", 404, "application/json"},
		{"GET", "/api/v1/status/x", 404, "application/json"},
	} {
		req, _ := http.NewRequest(tt.method, tc.page.URL+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		if tt.code != 200 {
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body["error"] == "" {
				t.Errorf("%s %s: body %v, %v: want a JSON error", tt.method, tt.path, body, err)
			}
		}
		resp.Body.Close()
		if resp.StatusCode != tt.code || resp.Header.Get("Content-Type") != tt.contentType {
			t.Errorf("%s %s: %d %s, want %d %s", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), tt.code, tt.contentType)
		}
	}
}

func valueOr(v *float64) float64 {
	if v == nil {
		return 0
	}
	return *v
}
