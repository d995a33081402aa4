package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// dashboardPath is the Grafana dashboard shipped in the repository.
const dashboardPath = "../../deploy/grafana/bifrost.json"

// grafanaDashboard is the part of Grafana's dashboard JSON model the tests
// check.
type grafanaDashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// metricName finds the metric names in a PromQL expression: ours, and the
// process and Go runtime collectors' that every process registers.
var metricName = regexp.MustCompile(`\b(?:bifrost|process|go)_[a-zA-Z0-9_]+\b`)

// loadDashboard reads the dashboard, checks that Grafana can import it (a
// Prometheus data source variable; every panel with an ID, a place and,
// unless it is a row, that data source and queries) and returns the metric
// names its queries use.
func loadDashboard(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 36 {
		t.Fatalf("dashboard title %q, uid %q, schemaVersion %d: want a title, a uid and a schema of Grafana 9 or later", d.Title, d.UID, d.SchemaVersion)
	}
	names := map[string]bool{}
	hasDatasource := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && string(v.Query) == `"prometheus"` {
			hasDatasource = true
		}
		for _, m := range metricName.FindAllString(v.Definition, -1) {
			names[m] = true
		}
	}
	if !hasDatasource {
		t.Error("no Prometheus data source variable named datasource")
	}
	ids := map[int]string{}
	queries := 0
	for _, p := range d.Panels {
		if p.ID <= 0 {
			t.Errorf("panel %q has no id", p.Title)
		}
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Title == "" || p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q: want a title and a place in the 24-column grid, have %+v", p.ID, p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the prometheus ${datasource} variable", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if q.RefID == "" || refs[q.RefID] || strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q: query %q with refId %q: want an expression and a refId of its own", p.Title, q.Expr, q.RefID)
			}
			refs[q.RefID] = true
			found := metricName.FindAllString(q.Expr, -1)
			if len(found) == 0 {
				t.Errorf("panel %q: query %q names no metric", p.Title, q.Expr)
			}
			for _, m := range found {
				names[m] = true
			}
			queries++
		}
	}
	if queries == 0 {
		t.Fatal("the dashboard has no queries")
	}
	out := make([]string, 0, len(names))
	for m := range names {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// TestGrafanaDashboardIsValid checks the dashboard's JSON alone (no
// cluster): a broken panel fails here in milliseconds.
func TestGrafanaDashboardIsValid(t *testing.T) {
	if names := loadDashboard(t); len(names) < 10 {
		t.Fatalf("the dashboard uses %d metrics: %v", len(names), names)
	}
}

// scrape returns the samples of a /metrics page by series (name and
// labels as printed).
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", addr, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape %s: bad sample %q", addr, line)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// seriesNames is the set of metric names of scraped series.
func seriesNames(samples ...map[string]float64) map[string]bool {
	out := map[string]bool{}
	for _, s := range samples {
		for series := range s {
			name, _, _ := strings.Cut(series, "{")
			out[name] = true
		}
	}
	return out
}

// TestGrafanaDashboardMetricsExist runs a standalone node and a frontend
// (real processes), drives MQTT traffic of the kinds the dashboard shows
// (QoS 0 and 1, a persistent session's inbox, a delivery to the other
// frontend, a dropped message, retained messages enough for the balancer to
// split a range) and checks that every metric a dashboard query names is
// on a /metrics page: renaming a metric without the dashboard fails here.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	want := loadDashboard(t)
	bin := buildBinary(t)
	storeGossip, storeHTTP, storeMQTT := rangestest.FreeAddr(t), rangestest.FreeAddr(t), rangestest.FreeAddr(t)
	// A small --split-bytes: the retained messages below make the balancer
	// split the retain range, a move it counts.
	startProc(t, bin, "store.log", "standalone", "--data", filepath.Join(t.TempDir(), "data"),
		"--gossip", storeGossip, "--raft", rangestest.FreeAddr(t), "--grpc", rangestest.FreeAddr(t),
		"--http", storeHTTP, "--mqtt", storeMQTT, "--mqtt-ws", "", "--raft-rtt-ms", "20",
		"--split-bytes", "65536", "--merge-bytes", "1024", "--balancer-interval", "100ms")
	frontHTTP, frontMQTT := rangestest.FreeAddr(t), rangestest.FreeAddr(t)
	startProc(t, bin, "frontend.log", "frontend", "--join", storeGossip,
		"--gossip", rangestest.FreeAddr(t), "--grpc", rangestest.FreeAddr(t), "--http", frontHTTP,
		"--mqtt", frontMQTT, "--mqtt-ws", "")

	// A persistent session and a clean one on the frontend; the publisher on
	// the standalone node.
	durable := dialMQTTSession(t, frontMQTT, "dash-durable", false, 60*time.Second)
	durable.subscribe("dash/#")
	transient := dialMQTT(t, frontMQTT, "dash-transient", 60*time.Second)
	transient.subscribe("dash/#")
	pub := dialMQTT(t, storeMQTT, "dash-pub", 60*time.Second)
	for i := 0; i < 3; i++ {
		pub.publish("dash/1", uint16(i+1), fmt.Sprint("m", i))
		for _, c := range []*client{durable, transient} {
			if got := c.receive(); got != fmt.Sprint("m", i) {
				t.Fatalf("message %d: received %q", i, got)
			}
		}
	}
	pub.write(&packet.Publish{Topic: "dash/0", Payload: []byte("qos0")})
	// A clean session that ends with a message in flight drops it
	// (session_ended): the transient subscriber leaves one unacknowledged.
	pub.publish("dash/2", 10, "unacked")
	for _, c := range []*client{durable, transient} {
		if p, ok := c.read().(*packet.Publish); !ok || string(p.Payload) != "qos0" {
			t.Fatalf("want the QoS 0 message, read %+v", p)
		}
	}
	if got := durable.receive(); got != "unacked" {
		t.Fatalf("received %q", got)
	}
	if p, ok := transient.read().(*packet.Publish); !ok || string(p.Payload) != "unacked" {
		t.Fatalf("want the unacknowledged message, read %+v", p)
	}
	transient.write(&packet.Disconnect{})
	// 40 retained messages of 4 KiB: the retain range outgrows --split-bytes.
	payload := strings.Repeat("r", 4096)
	for i := 0; i < 40; i++ {
		pub.write(&packet.Publish{Topic: fmt.Sprintf("retained/%02d", i), QoS: 1, PacketID: uint16(100 + i), Retain: true, Payload: []byte(payload)})
		if _, ok := pub.read().(*packet.Puback); !ok {
			t.Fatalf("retained message %d: no PUBACK", i)
		}
	}

	// Counters of moves and drops appear once they happen, and a split's
	// child counts on the store once it started: wait for them.
	deadline := time.Now().Add(60 * time.Second)
	for {
		store, front := scrape(t, storeHTTP), scrape(t, frontHTTP)
		have := seriesNames(store, front)
		var missing []string
		for _, m := range want {
			if !have[m] {
				missing = append(missing, m)
			}
		}
		// The figures behind the panels are the traffic's.
		var wrong []string
		if v := store[`bifrost_mqtt_messages_published_total{qos="1"}`]; v < 44 {
			wrong = append(wrong, fmt.Sprintf("QoS 1 messages in: %v, want at least 44", v))
		}
		if v := store[`bifrost_kvstore_range_bytes{keyspace="retain"}`]; v < 40*4096 {
			wrong = append(wrong, fmt.Sprintf("retain bytes on the store: %v, want at least %d", v, 40*4096))
		}
		if v := store[`bifrost_kvstore_ranges`]; v < 5 {
			wrong = append(wrong, fmt.Sprintf("ranges on the store: %v, want 5 or more after the split", v))
		}
		if len(missing) == 0 && len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics the dashboard queries that no process exports: %v; figures: %v", missing, wrong)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
