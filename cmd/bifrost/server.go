package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"google.golang.org/grpc"

	"github.com/bifrost-mq/bifrost/api"
	"github.com/bifrost-mq/bifrost/balancer"
	"github.com/bifrost-mq/bifrost/balancer/balancerpb"
	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ui"
	"github.com/dustin/go-humanize"
)

// serverFlags are the flags of 'store' and 'standalone'. Each can also be set
// by an environment variable BIFROST_<NAME> (dashes as underscores); a flag on
// the command line wins.
type serverFlags struct {
	data, gossip, advertise, raft, grpc, http, join, name, logLevel, logFormat string
	bootstrapExpect                                                            int
	rttMs                                                                      uint64

	config           string
	balancerPaused   bool
	pprof            bool
	balancerRF       int
	deadStoreTimeout time.Duration
	splitBytes       uint64
	mergeBytes       uint64
	splitLoad        float64
	mergeDelay       time.Duration
	keyspaceRF       string
	balancerInterval time.Duration
	ownerCheck       time.Duration
	cacheSize        byteSize
	memtableSize     byteSize
	bal              *balancer.Balancer
	clusterTLS       clusterTLSFlags
	tls              *clustertls.Credentials
	gossipKey        gossipKeyFlag
	clockOffsetFile  string

	// runsMQTT: standalone runs a frontend in the store's process.
	runsMQTT bool
	mqtt     mqttFlags
	frontCfg mqtt.Config
	front    *mqtt.Server
}

func (f *serverFlags) register(fs *flag.FlagSet, standalone bool) {
	expect := 0
	if standalone {
		expect = 1
	}
	fs.StringVar(&f.config, "config", "", "TOML file of settings named like these flags (flags and BIFROST_* variables win)")
	fs.StringVar(&f.data, "data", "./data", "data directory")
	fs.StringVar(&f.gossip, "gossip", "127.0.0.1:7946", "gossip bind address (host:port)")
	fs.StringVar(&f.advertise, "advertise", "", "gossip address peers dial (default: --gossip)")
	fs.StringVar(&f.raft, "raft", "127.0.0.1:7947", "Raft address (host:port), reachable by peers")
	fs.StringVar(&f.grpc, "grpc", "127.0.0.1:7948", "gRPC address (host:port), reachable by peers")
	fs.StringVar(&f.http, "http", "127.0.0.1:8091", "admin HTTP address for /metrics and /healthz (empty: off)")
	fs.BoolVar(&f.pprof, "pprof", false, "also serve Go's runtime profiles under /debug/pprof/ on the admin HTTP address")
	fs.StringVar(&f.join, "join", "", "comma-separated gossip addresses of members to join")
	fs.StringVar(&f.name, "name", "", "gossip member name (default store-<id>)")
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", expect, "create the cluster once this many stores are members (0: join only)")
	fs.Uint64Var(&f.rttMs, "raft-rtt-ms", 50, "Raft tick in milliseconds; an election starts after 10 to 20 ticks without a leader")
	def := balancer.DefaultPolicy()
	fs.BoolVar(&f.balancerPaused, "balancer-paused", false, "start with the balancer paused")
	fs.IntVar(&f.balancerRF, "replication-factor", def.ReplicationFactor, "replicas per range (capped by the number of stores)")
	fs.DurationVar(&f.deadStoreTimeout, "dead-store-timeout", 30*time.Second, "replace the replicas of a store gone this long")
	fs.Uint64Var(&f.splitBytes, "split-bytes", def.SplitBytes, "split a range larger than this")
	fs.Uint64Var(&f.mergeBytes, "merge-bytes", def.MergeBytes, "merge adjacent ranges both smaller than this")
	fs.StringVar(&f.keyspaceRF, "keyspace-replication", "", "replication factors per keyspace, overriding -replication-factor (e.g. dist=5,retain=3)")
	fs.DurationVar(&f.mergeDelay, "merge-delay", def.MergeDelay, "do not merge a range that was busier than a tenth of -split-load within this long (a range split by load is not merged back when its load pauses)")
	fs.Float64Var(&f.splitLoad, "split-load", def.SplitLoad, "split a range serving more reads plus writes per second than this, at the key that halves its load, while its leader uses at least half its CPU (0: off); neighbours under a tenth of it are cold enough to merge")
	fs.DurationVar(&f.balancerInterval, "balancer-interval", 5*time.Second, "time between balancer moves")
	fs.DurationVar(&f.ownerCheck, "inbox-owner-check", 10*time.Second, "how often the inbox leaders ask whether the frontends of attached sessions still have them (a session whose frontend died is detached then, its will published)")
	fs.Var(&f.cacheSize, "cache-size", "the storage engine's block cache, e.g. 512MiB or 2GiB (default: an eighth of the memory limit, 64 MiB to 8 GiB)")
	fs.Var(&f.memtableSize, "memtable-size", "the storage engine's memtable size, 1MiB to 4GiB (default 64MiB)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&f.clockOffsetFile, testClockOffsetFlag, "", "test only (the jepsen clock-skew nemesis): offset the wall clock the store reads by the duration in this file (e.g. 11m), re-read every 100 ms")
	f.clusterTLS.register(fs, "this node")
	f.gossipKey.register(fs)
	if standalone {
		f.runsMQTT = true
		f.mqtt.register(fs)
	}
}

// applyConfigFile sets every flag not given on the command line or in the
// environment from a TOML file whose keys are the flag names
// (data = "/var/lib/bifrost", split-bytes = 536870912, bootstrap-expect = 3).
func applyConfigFile(fs *flag.FlagSet, path string, tables func(map[string]any) error) error {
	if path == "" {
		return nil
	}
	var values map[string]any
	if _, err := toml.DecodeFile(path, &values); err != nil {
		return fmt.Errorf("config file %s: %v", path, err)
	}
	if tables != nil {
		if err := tables(values); err != nil {
			return fmt.Errorf("config file %s: %v", path, err)
		}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("config file %s: unknown setting %q", path, k)
		}
		env := "BIFROST_" + strings.ToUpper(strings.ReplaceAll(k, "-", "_"))
		if _, inEnv := os.LookupEnv(env); given[k] || inEnv {
			continue
		}
		if err := fs.Set(k, fmt.Sprint(values[k])); err != nil {
			return fmt.Errorf("config file %s: invalid value %v for %s: %v", path, values[k], k, err)
		}
	}
	return nil
}

// applyEnv sets every flag not given on the command line from BIFROST_<NAME>.
func applyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := "BIFROST_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("invalid value %q for %s: %v", v, env, e)
			}
		}
	})
	return err
}

func (f *serverFlags) logger(stderr io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("invalid value %q for -log-level: want debug, info, warn or error", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	}
	return nil, fmt.Errorf("invalid value %q for -log-format: want text or json", f.logFormat)
}

func (f *serverFlags) nodeConfig(log *slog.Logger, reg prometheus.Registerer) (ranges.NodeConfig, error) {
	for name, addr := range map[string]string{"-gossip": f.gossip, "-raft": f.raft, "-grpc": f.grpc} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return ranges.NodeConfig{}, fmt.Errorf("invalid value %q for %s: want host:port", addr, name)
		}
	}
	if f.http != "" {
		if _, _, err := net.SplitHostPort(f.http); err != nil {
			return ranges.NodeConfig{}, fmt.Errorf("invalid value %q for -http: want host:port", f.http)
		}
	}
	if f.bootstrapExpect < 0 {
		return ranges.NodeConfig{}, fmt.Errorf("invalid value %d for -bootstrap-expect: must be 0 or more", f.bootstrapExpect)
	}
	if f.rttMs < 5 || f.rttMs > 10000 {
		return ranges.NodeConfig{}, fmt.Errorf("invalid value %d for -raft-rtt-ms: want 5 to 10000", f.rttMs)
	}
	join, err := parseJoin(f.join)
	if err != nil {
		return ranges.NodeConfig{}, err
	}
	if f.balancerRF < 1 || f.balancerRF > 7 {
		return ranges.NodeConfig{}, fmt.Errorf("invalid value %d for -replication-factor: want 1 to 7", f.balancerRF)
	}
	if f.deadStoreTimeout < time.Second || f.balancerInterval < 10*time.Millisecond {
		return ranges.NodeConfig{}, fmt.Errorf("-dead-store-timeout must be at least 1s and -balancer-interval at least 10ms")
	}
	if f.ownerCheck < 100*time.Millisecond {
		return ranges.NodeConfig{}, fmt.Errorf("invalid value %v for -inbox-owner-check: must be at least 100ms", f.ownerCheck)
	}
	if f.mergeDelay < 0 {
		return ranges.NodeConfig{}, fmt.Errorf("invalid value %v for -merge-delay: must be 0 or more", f.mergeDelay)
	}
	if f.splitLoad < 0 {
		return ranges.NodeConfig{}, fmt.Errorf("invalid value %v for -split-load: must be 0 or more", f.splitLoad)
	}
	mergeLoad := f.splitLoad / 10
	if f.splitLoad == 0 {
		mergeLoad = balancer.DefaultPolicy().MergeLoad
	}
	keyspaceRF, err := parseKeyspaceRF(f.keyspaceRF)
	if err != nil {
		return ranges.NodeConfig{}, err
	}
	if f.splitBytes > 0 && f.mergeBytes >= f.splitBytes {
		return ranges.NodeConfig{}, fmt.Errorf("invalid value %d for -merge-bytes: must be below -split-bytes (%d)", f.mergeBytes, f.splitBytes)
	}
	engine := kvstore.EngineOptions{CacheBytes: int64(f.cacheSize), MemTableBytes: uint64(f.memtableSize)}
	if err := engine.Validate(); err != nil {
		return ranges.NodeConfig{}, fmt.Errorf("invalid -cache-size or -memtable-size: %v", err)
	}
	if f.tls, err = f.clusterTLS.load(); err != nil {
		return ranges.NodeConfig{}, err
	}
	gossipKey, err := f.gossipKey.load()
	if err != nil {
		return ranges.NodeConfig{}, err
	}
	data, err := filepath.Abs(f.data)
	if err != nil {
		return ranges.NodeConfig{}, fmt.Errorf("invalid value %q for -data: %v", f.data, err)
	}
	var wallClock func() time.Time
	if f.clockOffsetFile != "" {
		c, err := newFileOffsetClock(f.clockOffsetFile)
		if err != nil {
			return ranges.NodeConfig{}, err
		}
		log.Warn("test only: the store's wall clock is offset by a file", "file", f.clockOffsetFile)
		wallClock = c.Now
	}
	return ranges.NodeConfig{
		Store: kvstore.Config{DataDir: data, RaftAddr: f.raft, RTTMillisecond: f.rttMs, Engine: engine, WallClock: wallClock,
			Coprocessors: map[kvpb.Keyspace]kvstore.CoprocessorFactory{
				kvpb.Keyspace_KEYSPACE_DIST:   dist.New,
				kvpb.Keyspace_KEYSPACE_INBOX:  inbox.New,
				kvpb.Keyspace_KEYSPACE_RETAIN: retain.New,
			}},
		Services: func(s *grpc.Server, n *ranges.Node) {
			f.bal = balancer.New(balancer.Config{
				Policy: balancer.Policy{ReplicationFactor: f.balancerRF, SplitBytes: f.splitBytes, MergeBytes: f.mergeBytes,
					SplitLoad: f.splitLoad, MergeLoad: mergeLoad, MergeDelay: f.mergeDelay, SplitLoadCPU: balancer.DefaultPolicy().SplitLoadCPU, KeyspaceReplication: keyspaceRF},
				Interval: f.balancerInterval, DeadStoreTimeout: f.deadStoreTimeout, Paused: f.balancerPaused,
				Logger: log, Registerer: reg,
			}, n)
			balancerpb.RegisterBalancerServer(s, balancer.NewService(f.bal))
			distpb.RegisterDistServer(s, dist.NewService(dist.NewClient(n.Router())))
			inboxpb.RegisterInboxServer(s, inbox.NewService(inbox.NewClient(n.Router())))
			retainpb.RegisterRetainServer(s, retain.NewService(retain.NewClient(n.Router())))
		},
		Name:            f.name,
		GossipAddr:      f.gossip,
		GossipAdvertise: f.advertise,
		GRPCAddr:        f.grpc,
		Join:            join,
		BootstrapExpect: f.bootstrapExpect,
		TLS:             f.tls,
		GossipKey:       gossipKey,
		Logger:          log,
		Registerer:      reg,
	}, nil
}

func runServer(cmd string, args []string, stderr io.Writer) error {
	start := time.Now()
	fs := newFlagSet(cmd, stderr)
	var f serverFlags
	f.register(fs, cmd == "standalone")
	if err := fs.Parse(args); err != nil {
		return flagError(cmd, fs, err, stderr)
	}
	if fs.NArg() > 0 {
		return usagef("bifrost %s: unexpected argument %q", cmd, fs.Arg(0))
	}
	if err := applyEnv(fs); err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	var tables func(map[string]any) error
	if f.runsMQTT {
		tables = f.mqtt.configFileTables
	}
	if err := applyConfigFile(fs, f.config, tables); err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	log, err := f.logger(stderr)
	if err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg, err := f.nodeConfig(log, reg)
	if err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	var apiCfg api.Config
	var apiOn bool
	if err := f.tls.Register(reg); err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
	}
	if f.runsMQTT {
		if f.frontCfg, err = f.mqtt.frontendConfig(fs, log, reg); err != nil {
			return usagef("bifrost %s: %v", cmd, err)
		}
		if apiCfg, apiOn, err = f.mqtt.api.config(); err != nil {
			return usagef("bifrost %s: %v", cmd, err)
		}
		cfg.MQTT = true
		services := cfg.Services
		cfg.Services = func(s *grpc.Server, n *ranges.Node) {
			services(s, n)
			fc := f.frontCfg
			fc.ReceiverID = mqtt.NewReceiverID(n.GRPCAddr())
			fc.NodeName = n.Name()
			fc.Dist, fc.Retain = dist.NewClient(n.Router()), retain.NewClient(n.Router())
			fc.Inbox = inbox.NewClient(n.Router())
			fc.Frontends = frontendAddrs(n.Membership)
			fc.ClusterTLS = f.tls
			front, err := mqtt.New(fc)
			if err != nil {
				panic(err) // validated above
			}
			front.RegisterService(s)
			f.front = front
		}
	}
	node, err := ranges.StartNode(cfg)
	if err != nil {
		log.Error("start failed", "err", err)
		return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
	}
	// A store is ready once the cluster is bootstrapped (or, joining one,
	// once it knows the cluster's ranges); a process with a frontend once
	// the frontend's probe is answered too: only then do its MQTT listeners
	// open, so that no client connects to a broker that cannot serve it.
	storeReady := func(context.Context) error {
		select {
		case <-node.Bootstrapped():
			return nil
		default:
		}
		if len(node.Router().Table().All()) > 0 {
			return nil
		}
		return errors.New("the cluster to bootstrap")
	}
	probe := storeReady
	if f.front != nil {
		probe = func(ctx context.Context) error {
			if err := storeReady(ctx); err != nil {
				return err
			}
			return f.front.Probe(ctx)
		}
	}
	ready := newReadiness("the cluster to bootstrap")
	httpSrv, err := serveAdminHTTP(f.http, reg, log, f.pprof, ready.check)
	if err != nil {
		node.Close()
		return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
	}
	// Wills go out through a frontend (to transient subscribers on every
	// frontend too, and the inboxes' owners are told), and the owners of
	// attached sessions are checked through it (a dead frontend's sessions
	// are detached: expiry, will): this process's frontend, or on a store
	// without one a frontend with no listeners and no clients.
	pub := f.front
	if pub == nil {
		pub, err = mqtt.New(mqtt.Config{ReceiverID: mqtt.NewReceiverID(node.GRPCAddr()),
			Dist: dist.NewClient(node.Router()), Retain: retain.NewClient(node.Router()), Inbox: inbox.NewClient(node.Router()),
			Frontends: frontendAddrs(node.Membership), ClusterTLS: f.tls, Logger: log})
		if err != nil {
			node.Close()
			return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
		}
	}
	defer pub.Close()
	var apiSrv *api.Server
	if apiOn && f.front != nil {
		own := node.GRPCAddr()
		status := ui.NodeConfig{Name: node.Name(), Membership: node.Membership, Table: node.Router().Table(),
			Refresh: node.Refresh, Retain: retain.NewClient(node.Router())}
		apiSrv, err = startAPI(apiCfg, f.front, func() (string, error) { return own, nil }, f.tls, status, reg, log)
		if err != nil {
			if httpSrv != nil {
				httpSrv.Close()
			}
			node.Close()
			return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
		}
	}
	// The inbox leaders' time-driven work: session expiry and wills.
	schedCtx, stopSched := context.WithCancel(context.Background())
	schedDone := make(chan struct{})
	sched := inbox.NewScheduler(inbox.SchedulerConfig{Logger: log, Registerer: reg, Routes: dist.NewClient(node.Router()), Owners: pub,
		OwnerCheckInterval: f.ownerCheck}, node, pub)
	go func() {
		defer close(schedDone)
		sched.Run(schedCtx)
	}()
	balDone := make(chan struct{})
	go func() {
		defer close(balDone)
		f.bal.Run(schedCtx)
	}()
	log.Info("bifrost running", "mode", cmd, "grpc", node.GRPCAddr(), "http", f.http, "data", cfg.Store.DataDir)
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	var failed error
	if waitReady(sigCtx, log, ready, start, probe) == nil && f.front != nil {
		if err := f.front.Start(); err != nil {
			log.Error("mqtt listeners failed", "err", err)
			failed = &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
		}
	}
	if failed == nil {
		<-sigCtx.Done()
		log.Info("shutting down", "signal", "terminated")
	}
	if apiSrv != nil {
		apiSrv.Close()
	}
	if f.front != nil {
		f.front.Close() // clients first: they reconnect elsewhere while the store drains
	}
	stopSched()
	<-schedDone
	<-balDone
	if httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = httpSrv.Shutdown(ctx)
		cancel()
	}
	if err := node.Close(); err != nil && failed == nil {
		return err
	}
	return failed
}

// parseJoin splits a -join value into gossip seeds.
func parseJoin(v string) ([]string, error) {
	var join []string
	for _, j := range strings.Split(v, ",") {
		if j = strings.TrimSpace(j); j != "" {
			if _, _, err := net.SplitHostPort(j); err != nil {
				return nil, fmt.Errorf("invalid address %q in -join: want host:port", j)
			}
			join = append(join, j)
		}
	}
	return join, nil
}

// serveAdminHTTP serves /metrics and /healthz (healthy while health returns
// nil) on addr, and with withPprof Go's runtime profiles under
// /debug/pprof/; an empty addr serves nothing and returns a nil server.
func serveAdminHTTP(addr string, reg *prometheus.Registry, log *slog.Logger, withPprof bool, health func() error) (*http.Server, error) {
	if addr == "" {
		return nil, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin http listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin http stopped", "err", err)
		}
	}()
	return srv, nil
}

// parseKeyspaceRF parses -keyspace-replication: keyspace=factor pairs.
func parseKeyspaceRF(v string) (map[kvpb.Keyspace]int, error) {
	if v == "" {
		return nil, nil
	}
	out := map[kvpb.Keyspace]int{}
	for _, pair := range strings.Split(v, ",") {
		name, n, ok := strings.Cut(strings.TrimSpace(pair), "=")
		ks, known := kvpb.Keyspace_value["KEYSPACE_"+strings.ToUpper(name)]
		rf, err := strconv.Atoi(n)
		if !ok || !known || ks == 0 || err != nil || rf < 1 || rf > 7 {
			return nil, fmt.Errorf("invalid value %q for -keyspace-replication: want keyspace=factor pairs (keyspaces kv, dist, inbox, retain; factors 1 to 7)", v)
		}
		out[kvpb.Keyspace(ks)] = rf
	}
	return out, nil
}

// byteSize is a flag of a size in bytes: a number with an optional unit
// (KiB, MiB, GiB, or kB, MB, GB); 0 or unset takes the default.
type byteSize uint64

func (b *byteSize) String() string {
	if b == nil || *b == 0 {
		return ""
	}
	return humanize.IBytes(uint64(*b))
}

func (b *byteSize) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return fmt.Errorf("want a size such as 512MiB: %v", err)
	}
	if n > 1<<50 {
		return fmt.Errorf("%s is too large", s)
	}
	*b = byteSize(n)
	return nil
}
