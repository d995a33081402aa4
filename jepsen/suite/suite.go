// Package suite names the harness's runs: workloads and nemeses by name,
// and the profiles (ci, full) that the jepsen command and the Makefile run.
package suite

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/kv"
	jmqtt "github.com/bifrost-mq/bifrost/jepsen/mqtt"
	"github.com/bifrost-mq/bifrost/jepsen/nemesis"
)

// Spec names one run of a suite: a workload, the nemeses the schedule
// draws from, and how long the clients run.
type Spec struct {
	Workload string
	Nemeses  []string
	Duration time.Duration
	// Stores is the cluster size (default 3); Frontends the number of MQTT
	// frontends (default 0 for the KV workloads, 3 for the MQTT ones).
	Stores, Frontends int
	// FaultEvery is the mean quiet time between faults (default
	// Config's); the admin nemeses run faster than the others.
	FaultEvery time.Duration
}

// Workloads are the names Configure knows.
var Workloads = []string{"register", "set", "moving-keys", "mqtt-queue", "mqtt-queue-qos1", "mqtt-queue-resend", "mqtt-takeover", "mqtt-takeover-persistent", "mqtt-retained", "mqtt-will"}

// Options are a run's settings that are not in its Spec.
type Options struct {
	// Out is the directory that gets one directory per run.
	Out string
	// Binary is the bifrost binary; BuildTags is recorded with the run.
	Binary, BuildTags string
	Seed              uint64
	Concurrency       int
	// CheckTimeout bounds porcupine (default 2m).
	CheckTimeout time.Duration
	KeepData     bool
	Logger       *slog.Logger
}

// Label is the spec's nemeses joined by "+", or "none".
func (s Spec) Label() string {
	if len(s.Nemeses) == 0 {
		return "none"
	}
	return strings.Join(s.Nemeses, "+")
}

// Configure builds the harness's config for a spec.
func Configure(spec Spec, o Options) (jepsen.Config, error) {
	stores := spec.Stores
	if stores == 0 {
		stores = 3
	}
	var wl jepsen.Workload
	var splitKey nemesis.SplitKeyFunc
	keys := nemesis.SplitKeys{}
	frontends, concurrency := spec.Frontends, o.Concurrency
	switch spec.Workload {
	case "mqtt-takeover", "mqtt-takeover-persistent":
		cfg := jmqtt.TakeoverConfig{Persistent: 4}
		if spec.Workload == "mqtt-takeover" {
			cfg.Clean = 2
		}
		t := jmqtt.NewTakeover(cfg)
		wl = t
		keys.Dist, keys.Inbox = jmqtt.DistSplitKey, jmqtt.TakeoverInboxSplitKey(cfg.Persistent)
		if frontends == 0 {
			frontends = 3
		}
		if concurrency == 0 {
			concurrency = t.Concurrency()
		}
	case "mqtt-will":
		wl = jmqtt.NewWill()
		keys.Dist, keys.Inbox = jmqtt.DistSplitKey, jmqtt.InboxSplitKey(1)
		if frontends == 0 {
			frontends = 3
		}
		if concurrency == 0 {
			concurrency = 9
		}
	case "mqtt-retained":
		wl = jmqtt.NewRetained(o.CheckTimeout)
		keys.Dist, keys.Inbox = jmqtt.DistSplitKey, jmqtt.InboxSplitKey(1)
		if frontends == 0 {
			frontends = 3
		}
	case "mqtt-queue", "mqtt-queue-qos1", "mqtt-queue-resend":
		cfg := jmqtt.QueueConfig{QoS1Only: spec.Workload == "mqtt-queue-qos1", ResendPublisher: spec.Workload == "mqtt-queue-resend"}
		wl = jmqtt.NewQueue(cfg)
		keys.Dist, keys.Inbox = jmqtt.DistSplitKey, jmqtt.InboxSplitKey(jmqtt.DefaultSubscribers)
		if frontends == 0 {
			frontends = 3
		}
		if concurrency == 0 {
			concurrency = 8
		}
	case "register":
		wl = kv.NewRegister(kv.RegisterConfig{CheckTimeout: o.CheckTimeout})
		splitKey = func(rng *rand.Rand) string { return fmt.Sprintf("reg/%06d", rng.IntN(1000)) }
	case "set":
		set := kv.NewSet([]string{kv.SetKey(500), kv.SetKey(1500)})
		wl, splitKey = set, set.SplitKey
	case "moving-keys":
		const keys = 60
		r := kv.NewMovingKeys(keys)
		r.SetCheckTimeout(o.CheckTimeout)
		wl = r
		splitKey = func(rng *rand.Rand) string { return kv.MovingKey(1 + rng.IntN(keys-1)) }
	default:
		return jepsen.Config{}, fmt.Errorf("unknown workload %q (%s)", spec.Workload, strings.Join(Workloads, ", "))
	}
	var nems []jepsen.Nemesis
	proxy := false
	for _, name := range spec.Nemeses {
		proxy = proxy || strings.HasPrefix(strings.TrimSpace(name), "delay")
		keys.KV = splitKey
		n, err := nemesis.New(strings.TrimSpace(name), keys)
		if err != nil {
			return jepsen.Config{}, err
		}
		nems = append(nems, n)
	}
	dir := filepath.Join(o.Out, fmt.Sprintf("%s-%s-%s", time.Now().UTC().Format("20060102T150405"), spec.Workload, spec.Label()))
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return jepsen.Config{
		Dir: dir, Binary: o.Binary, BuildTags: o.BuildTags, Stores: stores, Frontends: frontends, Concurrency: concurrency,
		// The balancer stays paused: the nemeses move ranges on the
		// schedule's terms, so that a seed replays the same moves.
		// Sessions of a dead frontend are detached (their wills
		// published) within 2 s of its restart, not 10.
		StoreArgs: []string{"--balancer-paused", "--raft-rtt-ms", "50", "--inbox-owner-check", "2s"},
		Workload:  wl, Nemeses: nems, Seed: o.Seed, Duration: spec.Duration, FaultEvery: spec.FaultEvery,
		DelayProxy: proxy, KeepData: o.KeepData, Logger: o.Logger,
	}, nil
}

// Only keeps the specs of the named workloads, in their order; a name no
// spec has is an error, so that a typo does not run nothing.
func Only(specs []Spec, workloads []string) ([]Spec, error) {
	want := map[string]bool{}
	for _, w := range workloads {
		want[strings.TrimSpace(w)] = false
	}
	var out []Spec
	for _, s := range specs {
		if _, ok := want[s.Workload]; ok {
			want[s.Workload] = true
			out = append(out, s)
		}
	}
	for w, found := range want {
		if !found {
			return nil, fmt.Errorf("the profile has no run of workload %q", w)
		}
	}
	return out, nil
}

// Suites are the named profiles of the CLI's -suite flag.
var Suites = map[string][]Spec{
	// ci: a few minutes in total on two cores; every workload, and between
	// them every kind of fault.
	"ci": {
		{Workload: "register", Nemeses: []string{"partition-one", "partition-halves", "kill", "pause", "delay", "leader-transfer"}, Duration: 30 * time.Second},
		{Workload: "set", Nemeses: []string{"partition-ring", "kill", "split-merge-move"}, Duration: 20 * time.Second},
		{Workload: "moving-keys", Nemeses: []string{"split-merge-move"}, Duration: 25 * time.Second, FaultEvery: time.Second},
		// MQTT: QoS 1 and 2 under store faults and moves of the dist and
		// inbox ranges, and under frontend faults, with a persistent
		// publisher that resends its QoS 2 messages through another
		// frontend (exactly once across frontends).
		{Workload: "mqtt-queue", Nemeses: []string{"kill", "partition-one", "split-merge-move-mqtt"}, Duration: 25 * time.Second, FaultEvery: 2 * time.Second},
		{Workload: "mqtt-queue-resend", Nemeses: []string{"kill-frontend", "partition-frontend", "pause-frontend"}, Duration: 20 * time.Second, FaultEvery: 2 * time.Second},
		// Clean and persistent sessions: one connection per client ID
		// across frontends (claims), under frontend and store faults.
		{Workload: "mqtt-takeover", Nemeses: []string{"kill-frontend", "kill", "partition-frontend"}, Duration: 20 * time.Second, FaultEvery: 2 * time.Second},
		{Workload: "mqtt-retained", Nemeses: []string{"partition-one", "kill-frontend", "partition-frontend"}, Duration: 15 * time.Second, FaultEvery: 2 * time.Second},
		// Wills kept in the inbox and claimed before they are published:
		// once, through frontend deaths and inbox leader changes.
		{Workload: "mqtt-will", Nemeses: []string{"kill-frontend", "kill"}, Duration: 20 * time.Second, FaultEvery: 3 * time.Second},
	},
	// full: every workload against every fault on its own, and mixed.
	"full": fullSuite(),
}

func fullSuite() []Spec {
	var out []Spec
	faults := [][]string{
		{"partition-one"}, {"partition-halves"}, {"partition-ring"}, {"partition-bridge"},
		{"kill"}, {"kill-minority"}, {"pause"}, {"delay"}, {"leader-transfer"},
	}
	for _, w := range []string{"register", "set"} {
		for _, f := range faults {
			out = append(out, Spec{Workload: w, Nemeses: f, Duration: 60 * time.Second, Stores: 5})
		}
		out = append(out, Spec{Workload: w, Nemeses: []string{"split-merge-move"}, Duration: 60 * time.Second, Stores: 4, FaultEvery: time.Second})
	}
	// Clocks off by more than the dedupe window while the leader is killed
	// or slowed past the routers' hedge (retries with the same request ID).
	out = append(out, Spec{Workload: "register", Nemeses: []string{"clock-skew", "kill-leader", "delay-leader"}, Duration: 60 * time.Second, Stores: 5})
	out = append(out,
		Spec{Workload: "moving-keys", Nemeses: []string{"split-merge-move"}, Duration: 90 * time.Second, Stores: 4, FaultEvery: time.Second},
		Spec{Workload: "moving-keys", Nemeses: []string{"split-merge-move", "kill", "partition-halves"}, Duration: 90 * time.Second, Stores: 5},
	)
	// Every MQTT workload against every fault, the frontends' own included
	// (leader transfers of dist and inbox ranges are in split-merge-move-mqtt).
	var mqttFaults [][]string
	for _, f := range faults {
		if f[0] != "leader-transfer" {
			mqttFaults = append(mqttFaults, f)
		}
	}
	mqttFaults = append(mqttFaults, []string{"kill-frontend"}, []string{"pause-frontend"}, []string{"partition-frontend"}, []string{"kill-any"})
	for _, w := range []string{"mqtt-queue", "mqtt-queue-resend", "mqtt-takeover", "mqtt-retained", "mqtt-will"} {
		for _, f := range mqttFaults {
			out = append(out, Spec{Workload: w, Nemeses: f, Duration: 60 * time.Second, Stores: 5})
		}
		out = append(out, Spec{Workload: w, Nemeses: []string{"split-merge-move-mqtt"}, Duration: 60 * time.Second, Stores: 4, FaultEvery: time.Second})
	}
	return out
}
