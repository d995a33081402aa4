// Command mqttbench is a load generator for MQTT brokers: it measures a
// broker's QoS 0 and QoS 1 throughput and end-to-end latency, fan-out,
// connects per second and memory per idle connection, and compares two
// runs. It speaks MQTT 3.1.1 through Bifrost's own codec (mqtt/packet) and
// gathers writes, so that one generator process can load a broker harder
// than a general-purpose client library would.
//
// Persistent sessions (clean session 0) have scenarios of their own:
// persistent (1:1 topics), fanin (many sessions, few publishers) and offline
// (messages queued for disconnected sessions, then drained); every scenario
// discards the persistent sessions it made, so that runs leave no queues
// behind.
//
// It also measures itself: next to each figure it reports its own CPU use
// and the broker's (given --pid; a comma-separated list for a broker of
// several processes, whose CPU and memory are summed), and warns when it
// used more, because a generator that is the bottleneck measures itself,
// not the broker.
//
//	mqttbench --addr 127.0.0.1:1883 --pid 1234 --name mybroker --json out.json
//	mqttbench compare mosquitto.json bifrost.json
//
// cmd/mqttbench/run.sh (make bench-mqtt) runs it against mosquitto and
// bifrost standalone and prints the comparison; cmd/mqttbench/cluster.sh
// (make bench-cluster) runs it against three bifrost stores and a frontend.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var err error
	if len(args) > 0 && args[0] == "compare" {
		err = runCompare(args[1:], stdout)
	} else {
		err = runBench(args, stdout, stderr)
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errScenarioFailed):
		return 1
	}
	fmt.Fprintln(stderr, "mqttbench:", err)
	return 2
}

// errScenarioFailed: a scenario failed; the others ran and were reported.
var errScenarioFailed = errors.New("a scenario failed")

// config is what one run measures, from the flags.
type config struct {
	addr         string
	pids         []int
	name         string
	jsonPath     string
	scenarios    []string
	duration     time.Duration
	warmup       time.Duration
	pairs        int
	fanout       int
	dialers      int
	idle         int
	settle       time.Duration
	payload      int
	window       int
	inflight     int
	stallTimeout time.Duration
	pause        time.Duration
	readyTimeout time.Duration
	cpuProfile   string

	// fanin: persistent subscribers, one topic each, and the publishers
	// the topics are dealt to.
	faninSubscribers, faninPublishers int
	// offline: persistent sessions, messages queued for each, publishers.
	offlineSessions, offlineMessages, offlinePublishers int

	// runID keeps this run's client IDs and topics apart from any other's.
	runID string
}

// scenario is one measurement.
type scenario struct {
	name string
	// describe says what is measured, with the run's parameters.
	describe func(*config) string
	// unit is what the result's Rate counts per second.
	unit string
	run  func(context.Context, *config, *result) error
}

var scenarios = []scenario{
	{"idle", func(c *config) string {
		return fmt.Sprintf("broker RSS growth per idle connection, %d connections", c.idle)
	}, "", runIdle},
	{"connect", func(c *config) string {
		return fmt.Sprintf("CONNECT/CONNACK/DISCONNECT cycles, %d concurrent dialers", c.dialers)
	}, "connects/s", runConnects},
	{"qos0", func(c *config) string {
		return fmt.Sprintf("QoS 0, %d publishers -> %d subscribers on 1:1 topics, %d-byte payloads", c.pairs, c.pairs, c.payload)
	}, "msgs/s", func(ctx context.Context, c *config, r *result) error {
		return runDelivery(ctx, c, r, load{publishers: c.pairs, topics: c.pairs, perTopic: 1, qos: 0})
	}},
	{"qos1", func(c *config) string {
		return fmt.Sprintf("QoS 1, %d publishers -> %d subscribers on 1:1 topics, %d-byte payloads", c.pairs, c.pairs, c.payload)
	}, "msgs/s", func(ctx context.Context, c *config, r *result) error {
		return runDelivery(ctx, c, r, load{publishers: c.pairs, topics: c.pairs, perTopic: 1, qos: 1})
	}},
	{"persistent", func(c *config) string {
		return fmt.Sprintf("QoS 1, %d publishers -> %d persistent subscribers (clean session 0) on 1:1 topics, %d-byte payloads", c.pairs, c.pairs, c.payload)
	}, "msgs/s", func(ctx context.Context, c *config, r *result) error {
		return runDelivery(ctx, c, r, load{publishers: c.pairs, topics: c.pairs, perTopic: 1, qos: 1, persistent: true})
	}},
	{"fanin", func(c *config) string {
		return fmt.Sprintf("QoS 1, %d publishers round-robin over %d persistent subscribers' topics (one each, clean session 0), %d-byte payloads",
			c.faninPublishers, c.faninSubscribers, c.payload)
	}, "msgs/s", func(ctx context.Context, c *config, r *result) error {
		return runDelivery(ctx, c, r, load{publishers: c.faninPublishers, topics: c.faninSubscribers, perTopic: 1, qos: 1, persistent: true})
	}},
	{"offline", func(c *config) string {
		return fmt.Sprintf("QoS 1, %d messages into each of %d disconnected persistent sessions from %d publishers, then all reconnect and drain, %d-byte payloads",
			c.offlineMessages, c.offlineSessions, c.offlinePublishers, c.payload)
	}, "msgs/s", runOffline},
	{"fanout", func(c *config) string {
		return fmt.Sprintf("QoS 0, 1 publisher -> %d subscribers on one topic, %d-byte payloads", c.fanout, c.payload)
	}, "deliveries/s", func(ctx context.Context, c *config, r *result) error {
		return runDelivery(ctx, c, r, load{publishers: 1, topics: 1, perTopic: c.fanout, qos: 0})
	}},
}

func scenarioNames() []string {
	var names []string
	for _, s := range scenarios {
		names = append(names, s.name)
	}
	return names
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{runID: fmt.Sprintf("%08x", rand.Uint32())}
	fs := flag.NewFlagSet("mqttbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: mqttbench [flags]\n       mqttbench compare A.json B.json\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var list, pids string
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:1883", "broker address (host:port, MQTT over TCP)")
	fs.StringVar(&pids, "pid", "", "the broker's process ID, for its CPU use and memory; comma-separated for a broker of several processes, summed (empty: not measured, no idle scenario)")
	fs.StringVar(&cfg.name, "name", "", "the broker's name in the report (default: --addr)")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write the results to this JSON file, for 'mqttbench compare'")
	fs.StringVar(&list, "scenarios", strings.Join(scenarioNames(), ","), "comma-separated scenarios to run, in this order")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measurement window of each scenario")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "load before the window, not measured")
	fs.IntVar(&cfg.pairs, "pairs", 10, "qos0, qos1: publisher/subscriber pairs, one topic each")
	fs.IntVar(&cfg.fanout, "fanout", 100, "fanout: subscribers of the one topic")
	fs.IntVar(&cfg.faninSubscribers, "fanin-subscribers", 1000, "fanin: persistent subscribers, each on a topic of its own")
	fs.IntVar(&cfg.faninPublishers, "fanin-publishers", 10, "fanin: publishers, each publishing round-robin over its share of the topics")
	fs.IntVar(&cfg.offlineSessions, "offline-sessions", 100, "offline: disconnected persistent sessions")
	fs.IntVar(&cfg.offlineMessages, "offline-messages", 1000, "offline: messages queued for each session")
	fs.IntVar(&cfg.offlinePublishers, "offline-publishers", 10, "offline: publishers, each publishing round-robin over its share of the sessions")
	fs.IntVar(&cfg.dialers, "dialers", 8, "connect: concurrent dialers")
	fs.IntVar(&cfg.idle, "idle", 10000, "idle: connections to open")
	fs.DurationVar(&cfg.settle, "settle", 3*time.Second, "idle: wait after the last connection before reading the RSS")
	fs.IntVar(&cfg.payload, "payload", 64, "payload bytes (at least 16: sequence number and send time)")
	fs.IntVar(&cfg.window, "window", 100, "messages a publisher may have published but not yet received by every subscriber")
	fs.IntVar(&cfg.inflight, "inflight", 100, "qos1: publishes a publisher may have unacknowledged")
	fs.DurationVar(&cfg.stallTimeout, "stall-timeout", 10*time.Second, "how long a publisher waits for its window to open (deliveries, PUBACKs), or the offline drain for its next message, before the scenario fails (the drain's ends, counting what did not come as lost)")
	fs.DurationVar(&cfg.pause, "pause", time.Second, "idle time between scenarios, for the broker to close the last one's connections")
	fs.DurationVar(&cfg.readyTimeout, "ready-timeout", 60*time.Second, "how long to wait for the broker to subscribe and deliver before the first scenario")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write the generator's own CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for p := range strings.SplitSeq(pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("--pid: %q is not a process ID", p)
		}
		cfg.pids = append(cfg.pids, pid)
	}
	for name := range strings.SplitSeq(list, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if !slices.Contains(scenarioNames(), name) {
			return nil, fmt.Errorf("unknown scenario %q (want some of %s)", name, strings.Join(scenarioNames(), ", "))
		}
		cfg.scenarios = append(cfg.scenarios, name)
	}
	if cfg.name == "" {
		cfg.name = cfg.addr
	}
	return cfg, cfg.validate()
}

func (c *config) validate() error {
	switch {
	case c.duration <= 0:
		return errors.New("--duration must be positive")
	case c.stallTimeout <= 0:
		return errors.New("--stall-timeout must be positive")
	case c.warmup < 0:
		return errors.New("--warmup must not be negative")
	case c.pairs < 1 || c.fanout < 1 || c.dialers < 1 || c.idle < 1:
		return errors.New("--pairs, --fanout, --dialers and --idle must be at least 1")
	case c.faninPublishers < 1 || c.faninSubscribers < c.faninPublishers:
		return errors.New("--fanin-publishers must be at least 1 and at most --fanin-subscribers")
	case c.offlinePublishers < 1 || c.offlineSessions < c.offlinePublishers || c.offlineMessages < 1:
		return errors.New("--offline-publishers must be at least 1 and at most --offline-sessions, --offline-messages at least 1")
	case c.payload < stampSize:
		return fmt.Errorf("--payload %d is under %d bytes", c.payload, stampSize)
	case c.window < 1:
		return errors.New("--window must be at least 1")
	case c.inflight < 1 || c.inflight >= 1<<16-1:
		return errors.New("--inflight must be in [1, 65534]")
	}
	if slices.Contains(c.scenarios, "idle") {
		var lim syscall.Rlimit
		// The Go runtime has raised the soft limit to the hard one.
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && uint64(c.idle)+100 > lim.Cur {
			return fmt.Errorf("--idle %d needs more file descriptors than the limit %d (ulimit -n)", c.idle, lim.Cur)
		}
	}
	return nil
}

func (c *config) clientID(scenario, role string, i int) string {
	return fmt.Sprintf("mb%s-%s%s-%d", c.runID, scenario, role, i)
}

// report is a run's results, as written to --json.
type report struct {
	Broker  string    `json:"broker"`
	Addr    string    `json:"addr"`
	PIDs    []int     `json:"pids,omitempty"`
	Started time.Time `json:"started"`
	Results []*result `json:"results"`
}

// result is one scenario's figures. Rate counts RateUnit per second over the
// measurement window: messages received (qos0, qos1, persistent, fanin),
// deliveries (fanout), or connect cycles (connect); for offline, which has
// two phases and no window, Rate is the enqueue phase's (messages
// acknowledged per second, from the first publish to the last PUBACK) and
// DrainRate the drain phase's (messages received per second, from the
// reconnect to the last message). Latency is from publish to receipt
// (qos0, qos1, persistent, fanin, fanout) or of the whole cycle (connect);
// offline has none.
type result struct {
	Scenario    string  `json:"scenario"`
	Description string  `json:"description"`
	Rate        float64 `json:"rate"`
	RateUnit    string  `json:"rate_unit,omitempty"`
	DrainRate   float64 `json:"drain_rate,omitempty"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	Sent        int64   `json:"sent"`
	Received    int64   `json:"received"`
	Lost        int64   `json:"lost"`
	// Duplicated counts messages received more than once; only offline,
	// which knows every message it expects, counts them.
	Duplicated   int64   `json:"duplicated"`
	RSSBefore    int64   `json:"rss_before_bytes"`
	RSSAfter     int64   `json:"rss_after_bytes"`
	BytesPerConn float64 `json:"rss_bytes_per_conn"`
	// CPU use over the measurement window in percent of one core; absent
	// when not measured.
	GeneratorCPU *float64 `json:"generator_cpu_pct,omitempty"`
	BrokerCPU    *float64 `json:"broker_cpu_pct,omitempty"`
	Error        string   `json:"error,omitempty"`
}

// cpuSample is a reading of the CPU both processes have used.
type cpuSample struct {
	at, self, broker time.Duration
	brokerOK         bool
}

func (c *config) sampleCPU() cpuSample {
	s := cpuSample{at: now(), self: cpuTime(), brokerOK: len(c.pids) > 0}
	for _, pid := range c.pids {
		b, err := processCPU(pid)
		s.broker += b
		s.brokerOK = s.brokerOK && err == nil
	}
	return s
}

// brokerRSS is the resident memory of the broker's processes.
func (c *config) brokerRSS() (int64, error) {
	var sum int64
	for _, pid := range c.pids {
		rss, err := processRSS(pid)
		if err != nil {
			return 0, err
		}
		sum += rss
	}
	return sum, nil
}

// setCPU sets the CPU use between two samples.
func (r *result) setCPU(a, b cpuSample) {
	wall := b.at - a.at
	if wall <= 0 {
		return
	}
	percent := func(d time.Duration) *float64 {
		p := 100 * d.Seconds() / wall.Seconds()
		return &p
	}
	r.GeneratorCPU = percent(b.self - a.self)
	if a.brokerOK && b.brokerOK {
		r.BrokerCPU = percent(b.broker - a.broker)
	}
}

// generatorBound says whether the generator used more CPU than the broker:
// then the generator, not the broker, probably set the pace.
func (r *result) generatorBound() bool {
	return r.GeneratorCPU != nil && r.BrokerCPU != nil && *r.GeneratorCPU > *r.BrokerCPU
}

func milliseconds(d time.Duration) float64 { return d.Seconds() * 1000 }

func runBench(args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bench(ctx, cfg, stdout, stderr)
}

// bench runs cfg's scenarios and reports them.
func bench(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(stderr, "mqttbench: waiting for %s (%s) to deliver\n", cfg.name, cfg.addr)
	if err := waitReady(ctx, cfg); err != nil {
		return err
	}
	rep := &report{Broker: cfg.name, Addr: cfg.addr, PIDs: cfg.pids, Started: time.Now().UTC()}
	fmt.Fprintf(stdout, "mqttbench: %s at %s, %v windows after %v of warm-up\n", cfg.name, cfg.addr, cfg.duration, cfg.warmup)
	failed := false
	for _, name := range cfg.scenarios {
		i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
		s := scenarios[i]
		r := &result{Scenario: s.name, Description: s.describe(cfg), RateUnit: s.unit}
		fmt.Fprintf(stderr, "mqttbench: %s: %s\n", s.name, r.Description)
		if err := s.run(ctx, cfg, r); err != nil {
			r.Error = err.Error()
			failed = true
		}
		rep.Results = append(rep.Results, r)
		printResult(stdout, r)
		if ctx.Err() != nil {
			break
		}
		sleepUntil(ctx, now()+cfg.pause)
	}
	if cfg.jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if failed {
		return errScenarioFailed
	}
	return nil
}

func printResult(w io.Writer, r *result) {
	fmt.Fprintf(w, "%-8s %s\n", r.Scenario, r.Description)
	const indent = "         "
	if r.Error != "" {
		fmt.Fprintf(w, "%sFAILED: %s\n", indent, r.Error)
		return
	}
	switch r.Scenario {
	case "idle":
		fmt.Fprintf(w, "%s%.1f KiB per connection (RSS %.1f MiB -> %.1f MiB)\n", indent,
			r.BytesPerConn/1024, float64(r.RSSBefore)/(1<<20), float64(r.RSSAfter)/(1<<20))
		return
	case "connect":
		fmt.Fprintf(w, "%s%.0f %s, cycle p50 %.2f ms, p99 %.2f ms\n", indent, r.Rate, r.RateUnit, r.P50Ms, r.P99Ms)
	case "offline":
		fmt.Fprintf(w, "%senqueue %.0f %s (first publish to last PUBACK), drain %.0f %s (reconnect to last message); %d published, %d received, %d lost, %d duplicated\n",
			indent, r.Rate, r.RateUnit, r.DrainRate, r.RateUnit, r.Sent, r.Received, r.Lost, r.Duplicated)
	default:
		fmt.Fprintf(w, "%s%.0f %s, latency p50 %.2f ms, p99 %.2f ms; %d published, %d received, %d lost\n",
			indent, r.Rate, r.RateUnit, r.P50Ms, r.P99Ms, r.Sent, r.Received, r.Lost)
	}
	fmt.Fprintf(w, "%sCPU (%% of one core): generator %s, broker %s\n", indent, formatPercent(r.GeneratorCPU), formatPercent(r.BrokerCPU))
	if r.generatorBound() {
		fmt.Fprintf(w, "%swarning: the generator used more CPU than the broker, so it cannot saturate it: read the figures as a lower bound\n", indent)
	}
}

func formatPercent(p *float64) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", *p)
}
