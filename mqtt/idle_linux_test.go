package mqtt_test

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// front is frontend i's Server.
func (e *env) front(i int) *mqtt.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fronts[i]
}

// waitConns waits until s has want connections, parked of them parked.
func waitConns(t *testing.T, s *mqtt.Server, parked, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		np, n := mqtt.ParkedConns(s)
		if np == parked && n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, %d parked; want %d, %d parked", n, np, want, parked)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noGoroutinesBut fails unless the goroutines are back to those of ignore,
// within a few seconds.
func noGoroutinesBut(t *testing.T, ignore goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := goleak.Find(ignore)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left behind: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestIdleConnParks: an idle connection parks (no goroutine of its own),
// still gets deliveries, and reads on when it talks again.
func TestIdleConnParks(t *testing.T) {
	e := startEnv(t, 1, nil)
	s, addr := e.front(0), e.addr(0)
	sub := connectRaw(t, addr, packet.V5, "park-sub")
	sub.subscribe(1, packet.Subscription{Filter: "park/#", QoS: 1})
	pub := connectRaw(t, addr, packet.V311, "park-pub")
	waitConns(t, s, 2, 2)
	// A delivery to a parked connection, from the publisher's wake-up.
	pub.publish(&packet.Publish{Topic: "park/a", QoS: 1, PacketID: 1, Payload: []byte("one")})
	if p := sub.nextPublish(); string(p.Payload) != "one" {
		t.Fatalf("got %q", p.Payload)
	}
	sub.send(&packet.Puback{PacketID: 1})
	waitConns(t, s, 2, 2)
	// Parked again, and awake again: a ping, then a packet cut in two.
	sub.send(&packet.Pingreq{})
	if _, ok := sub.next().(*packet.Pingresp); !ok {
		t.Fatal("no PINGRESP")
	}
	waitConns(t, s, 2, 2)
	b, _ := packet.Append(nil, &packet.Publish{Topic: "park/b", Payload: []byte("two")}, packet.V311)
	pub.sendBytes(b[:1])
	time.Sleep(300 * time.Millisecond) // past parkAfter, within a packet
	if np, _ := mqtt.ParkedConns(s); np != 1 {
		t.Fatalf("%d parked while a packet is half read; want 1", np)
	}
	pub.sendBytes(b[1:])
	if p := sub.nextPublish(); string(p.Payload) != "two" {
		t.Fatalf("got %q", p.Payload)
	}
}

// TestParkedConnPeerClose: a parked connection the client hangs up on ends
// (its will goes out) and leaves no goroutine.
func TestParkedConnPeerClose(t *testing.T) {
	e := startEnv(t, 1, nil)
	s, addr := e.front(0), e.addr(0)
	watch := connectRaw(t, addr, packet.V5, "watch")
	watch.subscribe(1, packet.Subscription{Filter: "will/#", QoS: 0})
	c := dialRaw(t, addr, packet.V311)
	if ack := c.connect(&packet.Connect{ClientID: "gone", CleanStart: true, KeepAlive: 60,
		Will: &packet.Will{Topic: "will/gone", Payload: []byte("bye")}}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	waitConns(t, s, 2, 2)
	ignore := goleak.IgnoreCurrent()
	c.nc.Close()
	if p := watch.nextPublish(); string(p.Payload) != "bye" {
		t.Fatalf("got %q", p.Payload)
	}
	waitConns(t, s, 1, 1)
	noGoroutinesBut(t, ignore)
}

// TestParkedConnKeepAlive: a parked connection is closed at 1.5 x its keep
// alive, no earlier, not much later.
func TestParkedConnKeepAlive(t *testing.T) {
	e := startEnv(t, 1, nil)
	s, addr := e.front(0), e.addr(0)
	c := dialRaw(t, addr, packet.V5)
	start := time.Now()
	c.connect(&packet.Connect{ClientID: "ka-parked", CleanStart: true, KeepAlive: 2})
	waitConns(t, s, 1, 1)
	ignore := goleak.IgnoreCurrent()
	d := c.closed()
	el := time.Since(start)
	if d == nil || d.ReasonCode != packet.KeepAliveTimeout {
		t.Fatalf("disconnect: %+v", d)
	}
	if el < 2900*time.Millisecond || el > 4500*time.Millisecond {
		t.Fatalf("closed after %v; want 3s (1.5 x 2s), up to 1s late", el)
	}
	waitConns(t, s, 0, 0)
	noGoroutinesBut(t, ignore)
}

// TestParkedConnTakeover: a parked connection is taken over by a new one
// with its client ID.
func TestParkedConnTakeover(t *testing.T) {
	e := startEnv(t, 1, nil)
	s, addr := e.front(0), e.addr(0)
	old := connectRaw(t, addr, packet.V5, "tk")
	waitConns(t, s, 1, 1)
	ignore := goleak.IgnoreCurrent()
	start := time.Now()
	nu := connectRaw(t, addr, packet.V5, "tk")
	if d := old.closed(); d == nil || d.ReasonCode != packet.SessionTakenOver {
		t.Fatalf("disconnect: %+v", d)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("takeover took %v", el)
	}
	waitConns(t, s, 1, 1) // the new one, parked
	nu.nc.Close()
	waitConns(t, s, 0, 0)
	noGoroutinesBut(t, ignore)
}

// TestServerCloseWithParkedConns: Close ends parked connections (MQTT 5
// clients hear why), and leaves no goroutine, socket or epoll descriptor.
func TestServerCloseWithParkedConns(t *testing.T) {
	e := startEnv(t, 1, nil)
	s, addr := e.front(0), e.addr(0)
	_, port, _ := strings.Cut(addr, ":")
	ignore := goleak.IgnoreCurrent()
	epolls := countFDs(t, "anon_inode:[eventpoll]")
	var clients []*rawClient
	for i := 0; i < 20; i++ {
		clients = append(clients, connectRaw(t, addr, packet.Version(3+i%3), "close-"+strconv.Itoa(i)))
	}
	waitConns(t, s, 20, 20)
	if n := serverSockets(t, port); n != 21 { // and the listener
		t.Fatalf("%d server sockets on port %s; want 21", n, port)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		d := c.closed()
		if c.v == packet.V5 && (d == nil || d.ReasonCode != packet.ServerShuttingDown) {
			t.Fatalf("client %d: disconnect %+v", i, d)
		}
		c.nc.Close()
	}
	if _, n := mqtt.ParkedConns(s); n != 0 {
		t.Fatalf("%d connections after Close", n)
	}
	if n := serverSockets(t, port); n != 0 {
		t.Fatalf("%d server sockets on port %s after Close", n, port)
	}
	if n := countFDs(t, "anon_inode:[eventpoll]"); n != epolls-1 {
		t.Fatalf("%d epoll descriptors after Close; want %d (the poller's closed)", n, epolls-1)
	}
	noGoroutinesBut(t, ignore)
	if strings.Contains(goroutines(), "(*poller).loop") {
		t.Fatal("the poller's goroutine outlived Close")
	}
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// countFDs counts this process's descriptors that link to target.
func countFDs(t *testing.T, target string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ent := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + ent.Name()); err == nil && l == target {
			n++
		}
	}
	return n
}

// serverSockets counts this process's TCP sockets whose local port is port
// (a listener and the connections it accepted).
func serverSockets(t *testing.T, port string) int {
	t.Helper()
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	hexPort := strings.ToUpper(strconv.FormatInt(int64(p), 16))
	for len(hexPort) < 4 {
		hexPort = "0" + hexPort
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && strings.HasSuffix(fields[1], ":"+hexPort) {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
		fh.Close()
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ent := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + ent.Name()); err == nil && inodes[l] {
			n++
		}
	}
	return n
}
