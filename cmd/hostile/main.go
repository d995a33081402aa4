// Command hostile measures how much memory hostile clients can make a
// Bifrost broker hold (issue 14). It starts `bifrost standalone` on a
// temporary data directory with ports of its own, runs one abuse at a time
// against it, samples the process's resident memory (VmRSS in
// /proc/<pid>/status) every 20 ms, and prints the peak next to the memory
// before the abuse:
//
//   - stalled: --clients subscribers (QoS 1, clean sessions unless
//     --persistent) that never read after their SUBACK, sent --messages
//     QoS 1 messages of --size bytes by one publisher;
//   - ping: --clients connections that write PINGREQs for --duration and
//     never read the PINGRESPs.
//
// Each scenario runs on a fresh broker. A broker whose memory passes
// --rss-limit is killed and the run reported as over it, so that a broker
// without bounds cannot take the machine down.
//
//	go build -o /tmp/bifrost ./cmd/bifrost
//	go run ./cmd/hostile --bifrost /tmp/bifrost
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

type config struct {
	bifrost     string
	scenarios   []string
	clients     int
	messages    int
	size        int
	persistent  bool
	duration    time.Duration
	settle      time.Duration
	rssLimit    int64
	brokerFlags []string
	keep        bool
	// profile is where the broker's heap profile goes once its memory
	// passes profileAt (bifrost started with --pprof).
	profile   string
	profileAt int64
}

func main() {
	cfg := config{}
	fs := flag.NewFlagSet("hostile", flag.ExitOnError)
	fs.StringVar(&cfg.bifrost, "bifrost", "bifrost", "the bifrost binary to start")
	scenarios := fs.String("scenario", "stalled,ping", "comma-separated scenarios: stalled, ping")
	fs.IntVar(&cfg.clients, "clients", 100, "hostile connections")
	fs.IntVar(&cfg.messages, "messages", 30, "stalled: QoS 1 messages published")
	fs.IntVar(&cfg.size, "size", 1000000, "stalled: payload bytes of each message")
	fs.BoolVar(&cfg.persistent, "persistent", false, "stalled: the subscribers have persistent sessions (clean session 0)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "ping: how long the connections write PINGREQs")
	fs.DurationVar(&cfg.settle, "settle", 3*time.Second, "how long memory is sampled after the abuse")
	limit := fs.Int64("rss-limit-mib", 6144, "kill the broker once its resident memory passes this many MiB")
	extra := fs.String("broker-flags", "", "more flags for bifrost standalone, space-separated")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the broker's data directory and log")
	fs.StringVar(&cfg.profile, "heap-profile", "", "write the broker's heap profile here once its memory passes --heap-profile-at-mib (starts bifrost with --pprof)")
	profileAt := fs.Int64("heap-profile-at-mib", 1024, "see --heap-profile")
	_ = fs.Parse(os.Args[1:])
	cfg.scenarios = strings.Split(*scenarios, ",")
	cfg.rssLimit = *limit << 20
	cfg.brokerFlags = strings.Fields(*extra)
	cfg.profileAt = *profileAt << 20
	if cfg.profile != "" {
		cfg.brokerFlags = append(cfg.brokerFlags, "--pprof")
	}
	for _, s := range cfg.scenarios {
		if err := runScenario(&cfg, s); err != nil {
			fmt.Fprintf(os.Stderr, "hostile: %s: %v\n", s, err)
			os.Exit(1)
		}
	}
}

// broker is a running bifrost standalone.
type broker struct {
	cmd      *exec.Cmd
	dir      string
	mqtt     string
	http     string
	exited   chan struct{}
	peak     atomic.Int64
	overflow atomic.Bool
	stop     chan struct{}
	sampled  sync.WaitGroup
}

func runScenario(cfg *config, name string) error {
	var abuse func(ctx context.Context, cfg *config, b *broker) (string, error)
	switch name {
	case "stalled":
		abuse = stalled
	case "ping":
		abuse = ping
	default:
		return fmt.Errorf("unknown scenario %q", name)
	}
	b, err := startBroker(cfg)
	if err != nil {
		return err
	}
	defer b.close(cfg)
	time.Sleep(time.Second) // past the start's own allocations
	base, err := rss(b.cmd.Process.Pid)
	if err != nil {
		return err
	}
	b.sample(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-b.exited:
		case <-b.stop:
		}
		cancel()
	}()
	detail, err := abuse(ctx, cfg, b)
	if err == nil {
		select {
		case <-time.After(cfg.settle):
		case <-b.exited:
		}
	}
	metrics := b.metrics()
	close(b.stop)
	b.sampled.Wait()
	hwm, _ := hwm(b.cmd.Process.Pid)
	verdict := ""
	if b.overflow.Load() {
		verdict = fmt.Sprintf(" OVER THE LIMIT (%d MiB): killed", cfg.rssLimit>>20)
	}
	fmt.Printf("%s: %s\n  rss before %d MiB, peak %d MiB (VmHWM %d MiB), growth %d MiB%s\n  %s\n",
		name, detail, base>>20, b.peak.Load()>>20, hwm>>20, (b.peak.Load()-base)>>20, verdict, metrics)
	if err != nil && !b.overflow.Load() {
		return err
	}
	return nil
}

// freePort reserves a loopback port for a moment and returns it.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func startBroker(cfg *config) (*broker, error) {
	dir, err := os.MkdirTemp("", "hostile-")
	if err != nil {
		return nil, err
	}
	var ports [5]string
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	args := append([]string{"standalone", "--data", dir + "/data",
		"--mqtt", ports[0], "--http", ports[1], "--gossip", ports[2], "--raft", ports[3], "--grpc", ports[4],
		"--mqtt-ws", "", "--mqtt-tls", "", "--mqtt-wss", "", "--api", "", "--log-level", "warn"}, cfg.brokerFlags...)
	log, err := os.Create(dir + "/bifrost.log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(cfg.bifrost, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &broker{cmd: cmd, dir: dir, mqtt: ports[0], http: ports[1], exited: make(chan struct{}), stop: make(chan struct{})}
	go func() { _ = cmd.Wait(); log.Close(); close(b.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + b.http + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b, nil
			}
		}
		select {
		case <-b.exited:
			return nil, fmt.Errorf("bifrost exited at start; see %s/bifrost.log", dir)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.close(cfg)
			return nil, errors.New("bifrost not ready after 60 s")
		}
	}
}

// sample records the broker's peak resident memory until stop, and kills
// it past the limit.
func (b *broker) sample(cfg *config) {
	b.sampled.Add(1)
	go func() {
		defer b.sampled.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		profiled := cfg.profile == ""
		for {
			select {
			case <-b.stop:
				return
			case <-b.exited:
				return
			case <-t.C:
			}
			r, err := rss(b.cmd.Process.Pid)
			if err != nil {
				continue
			}
			if r > b.peak.Load() {
				b.peak.Store(r)
			}
			if !profiled && r > cfg.profileAt {
				profiled = true
				b.heapProfile(cfg.profile)
			}
			if r > cfg.rssLimit && !b.overflow.Swap(true) {
				_ = b.cmd.Process.Kill()
			}
		}
	}()
}

// metrics picks the broker's drop and pause counters from /metrics.
func (b *broker) metrics() string {
	resp, err := http.Get("http://" + b.http + "/metrics")
	if err != nil {
		return "metrics: " + err.Error()
	}
	defer resp.Body.Close()
	var picked []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "bifrost_mqtt_messages_dropped_total") || strings.HasPrefix(l, "bifrost_mqtt_reader_pauses_total") ||
			strings.HasPrefix(l, "bifrost_mqtt_messages_delivered_total") || strings.HasPrefix(l, "bifrost_mqtt_budget_waits_total") {
			picked = append(picked, l)
		}
	}
	return strings.Join(picked, "\n  ")
}

// heapProfile writes the broker's heap profile to path.
func (b *broker) heapProfile(path string) {
	resp, err := http.Get("http://" + b.http + "/debug/pprof/heap")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile: heap profile:", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile: heap profile:", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

func (b *broker) close(cfg *config) {
	_ = b.cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
	if cfg.keep {
		fmt.Printf("  kept %s\n", b.dir)
		return
	}
	_ = os.RemoveAll(b.dir)
}

func rss(pid int) (int64, error) { return statusKiB(pid, "VmRSS:") }
func hwm(pid int) (int64, error) { return statusKiB(pid, "VmHWM:") }

func statusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			f := strings.Fields(l)
			kib, err := strconv.ParseInt(f[1], 10, 64)
			return kib << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// conn is a raw MQTT 3.1.1 connection.
type conn struct {
	nc net.Conn
	in []byte
}

// dial connects, reads the CONNACK and, with filter set, subscribes and
// reads the SUBACK; readBuffer sets the socket's receive buffer.
func dial(addr, clientID string, clean bool, filter string, readBuffer int) (*conn, error) {
	// The receive buffer is set before the connection opens: shrunk after,
	// the kernel drops data of the window it had advertised, and the
	// broker's retransmissions back off for seconds.
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		if readBuffer <= 0 {
			return nil
		}
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, readBuffer)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc}
	if err := c.write(&packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: clientID, CleanStart: clean, KeepAlive: 0}); err != nil {
		nc.Close()
		return nil, err
	}
	if err := c.expect(packet.CONNACK); err != nil {
		nc.Close()
		return nil, err
	}
	if filter != "" {
		if err := c.write(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, QoS: 1}}}); err != nil {
			nc.Close()
			return nil, err
		}
		if err := c.expect(packet.SUBACK); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *conn) write(p packet.Packet) error {
	b, err := packet.Append(nil, p, packet.V311)
	if err != nil {
		return err
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err = c.nc.Write(b)
	return err
}

// expect reads packets until one of type t (within 30 s).
func (c *conn) expect(t packet.Type) error {
	_ = c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer c.nc.SetReadDeadline(time.Time{})
	buf := make([]byte, 64<<10)
	for {
		for len(c.in) > 0 {
			p, n, err := packet.Decode(c.in, packet.V311)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				return err
			}
			c.in = c.in[n:]
			if p.Type() == t {
				return nil
			}
		}
		n, err := c.nc.Read(buf)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", t, err)
		}
		c.in = append(c.in, buf[:n]...)
	}
}

// stalled: subscribers that never read, and a publisher of large QoS 1
// messages to them.
func stalled(ctx context.Context, cfg *config, b *broker) (string, error) {
	const topic = "hostile/stalled"
	subs := make([]*conn, 0, cfg.clients)
	defer func() {
		for _, s := range subs {
			s.nc.Close()
		}
	}()
	for i := 0; i < cfg.clients; i++ {
		s, err := dial(b.mqtt, fmt.Sprintf("stalled-%d", i), !cfg.persistent, topic, 4<<10)
		if err != nil {
			return "", fmt.Errorf("subscriber %d: %w", i, err)
		}
		subs = append(subs, s)
	}
	pub, err := dial(b.mqtt, "publisher", true, "", 0)
	if err != nil {
		return "", err
	}
	defer pub.nc.Close()
	payload := make([]byte, cfg.size)
	// The PUBACKs are read as they come; up to 16 messages unacknowledged.
	acked := make(chan error, 1)
	window := make(chan struct{}, 16)
	go func() {
		for i := 0; i < cfg.messages; i++ {
			if err := pub.expect(packet.PUBACK); err != nil {
				acked <- err
				return
			}
			<-window
		}
		acked <- nil
	}()
	start := time.Now()
	for i := 0; i < cfg.messages; i++ {
		select {
		case window <- struct{}{}:
		case <-ctx.Done():
			return "", errors.New("the broker exited")
		}
		if err := pub.write(&packet.Publish{QoS: 1, PacketID: uint16(i%60000 + 1), Topic: topic, Payload: payload}); err != nil {
			return "", err
		}
	}
	select {
	case err = <-acked:
	case <-ctx.Done():
		err = errors.New("the broker exited")
	}
	kind := "clean"
	if cfg.persistent {
		kind = "persistent"
	}
	return fmt.Sprintf("%d %s subscribers that never read, %d QoS 1 messages of %d bytes (%.1f s)",
		cfg.clients, kind, cfg.messages, cfg.size, time.Since(start).Seconds()), err
}

// ping: connections that write PINGREQs and never read the PINGRESPs.
func ping(ctx context.Context, cfg *config, b *broker) (string, error) {
	cs := make([]*conn, 0, cfg.clients)
	defer func() {
		for _, c := range cs {
			c.nc.Close()
		}
	}()
	for i := 0; i < cfg.clients; i++ {
		c, err := dial(b.mqtt, fmt.Sprintf("pinger-%d", i), true, "", 4<<10)
		if err != nil {
			return "", fmt.Errorf("client %d: %w", i, err)
		}
		cs = append(cs, c)
	}
	pings := make([]byte, 64<<10)
	for i := 0; i < len(pings); i += 2 {
		pings[i] = 0xc0
	}
	var written atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(cfg.duration)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				_ = c.nc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				n, err := c.nc.Write(pings)
				written.Add(int64(n))
				var ne net.Error
				if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
					return
				}
			}
		}()
	}
	wg.Wait()
	return fmt.Sprintf("%d connections writing PINGREQs for %v without reading (%d MiB of PINGREQs taken by the broker's sockets)",
		cfg.clients, cfg.duration, written.Load()>>20), nil
}
