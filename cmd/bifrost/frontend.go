package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ui"
)

// runFrontend runs a stateless MQTT frontend that joins a cluster: a
// gateway (gossip member that routes to the stores), the Frontend gRPC
// service for deliveries from other frontends, and the MQTT listeners.
func runFrontend(args []string, stderr io.Writer) error {
	start := time.Now()
	const cmd = "frontend"
	fs := newFlagSet(cmd, stderr)
	var f serverFlags // for the shared log and config flags
	var m mqttFlags
	var gossip, advertise, grpcAddr, httpAddr, join, name string
	fs.StringVar(&f.config, "config", "", "TOML file of settings named like these flags (flags and BIFROST_* variables win)")
	fs.StringVar(&gossip, "gossip", "127.0.0.1:7956", "gossip bind address (host:port)")
	fs.StringVar(&advertise, "advertise", "", "gossip address peers dial (default: --gossip)")
	fs.StringVar(&grpcAddr, "grpc", "127.0.0.1:7958", "gRPC address other frontends reach this one on (host:port)")
	fs.StringVar(&httpAddr, "http", "127.0.0.1:8092", "admin HTTP address for /metrics and /healthz (empty: off)")
	fs.BoolVar(&f.pprof, "pprof", false, "also serve Go's runtime profiles under /debug/pprof/ on the admin HTTP address")
	fs.StringVar(&join, "join", "", "comma-separated gossip addresses of cluster members (required)")
	fs.StringVar(&name, "name", "", "gossip member name (default frontend-<grpc address>)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	f.clusterTLS.register(fs, "this frontend")
	f.gossipKey.register(fs)
	m.register(fs)
	if err := fs.Parse(args); err != nil {
		return flagError(cmd, fs, err, stderr)
	}
	if fs.NArg() > 0 {
		return usagef("bifrost %s: unexpected argument %q", cmd, fs.Arg(0))
	}
	if err := applyEnv(fs); err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	if err := applyConfigFile(fs, f.config, m.configFileTables); err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	log, err := f.logger(stderr)
	if err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	for flagName, addr := range map[string]string{"-gossip": gossip, "-grpc": grpcAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return usagef("bifrost %s: invalid value %q for %s: want host:port", cmd, addr, flagName)
		}
	}
	seeds, err := parseJoin(join)
	if err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	if len(seeds) == 0 {
		return usagef("bifrost %s: -join is required: the gossip address of a cluster member", cmd)
	}
	creds, err := f.clusterTLS.load()
	if err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	gossipKey, err := f.gossipKey.load()
	if err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := creds.Register(reg); err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
	}
	fc, err := m.frontendConfig(fs, log, reg)
	if err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	apiCfg, apiOn, err := m.api.config()
	if err != nil {
		return usagef("bifrost %s: %v", cmd, err)
	}
	if name == "" {
		name = "frontend-" + grpcAddr
	}

	lis, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: grpc listen on %s: %v", cmd, grpcAddr, err)}
	}
	gw, err := ranges.StartGateway(ranges.GatewayConfig{
		Name: name, GossipAddr: gossip, GossipAdvertise: advertise, Join: seeds,
		GRPCAddr: lis.Addr().String(), MQTT: true, TLS: creds, GossipKey: gossipKey, Logger: log, Registerer: reg,
	})
	if err != nil {
		lis.Close()
		return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
	}
	defer gw.Close()
	fc.ReceiverID = mqtt.NewReceiverID(lis.Addr().String())
	fc.NodeName = name
	fc.Dist, fc.Retain = dist.NewClient(gw.Router()), retain.NewClient(gw.Router())
	fc.Inbox = inbox.NewClient(gw.Router())
	fc.Frontends = frontendAddrs(gw.Membership)
	fc.ClusterTLS = creds
	front, err := mqtt.New(fc)
	if err != nil {
		lis.Close()
		return usagef("bifrost %s: %v", cmd, err)
	}
	g := clustertls.NewServer(creds)
	front.RegisterService(g)
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := g.Serve(lis); err != nil {
			log.Error("grpc server stopped", "err", err)
		}
	}()
	defer func() { g.Stop(); <-served }()

	// The listeners open once the cluster answers the frontend's probe;
	// until then /healthz says what it waits for.
	ready := newReadiness("the cluster's ranges")
	srv, err := serveAdminHTTP(httpAddr, reg, log, f.pprof, ready.check)
	if err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
	}
	if srv != nil {
		defer srv.Close()
	}
	defer front.Close()
	if apiOn {
		status := ui.NodeConfig{Name: name, Membership: gw.Membership, Table: gw.Router().Table(),
			Refresh: gw.Refresh, Retain: retain.NewClient(gw.Router())}
		apiSrv, err := startAPI(apiCfg, front, anyStore(gw.Membership()), creds, status, reg, log)
		if err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
		}
		defer apiSrv.Close()
	}
	log.Info("bifrost frontend running", "grpc", lis.Addr().String(), "receiver", fc.ReceiverID)
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	probe := func(ctx context.Context) error {
		if !gw.Ready() {
			_ = gw.Refresh(ctx)
			if !gw.Ready() {
				return errors.New("the cluster's ranges (none known yet)")
			}
		}
		return front.Probe(ctx)
	}
	if waitReady(sigCtx, log, ready, start, probe) == nil {
		if err := front.Start(); err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("bifrost %s: %v", cmd, err)}
		}
	}
	<-sigCtx.Done()
	log.Info("shutting down")
	return nil
}
