package mqtt_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestMosquittoClients runs Debian's mosquitto_sub and mosquitto_pub
// (package mosquitto-clients, libmosquitto's command-line clients) against a
// frontend, over MQTT 5 and 3.1.1. The binaries are a test dependency, like
// the Go modules: missing, the test fails, saying how to install them.
func TestMosquittoClients(t *testing.T) {
	bins := requireMosquitto(t)
	e := startEnv(t, 1, nil)
	host, port, err := net.SplitHostPort(e.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		version string
		v5      bool
	}{{"mqttv5", true}, {"mqttv311", false}} {
		t.Run(tc.version, func(t *testing.T) {
			topic := "interop/mosquitto/" + tc.version
			common := []string{"-h", host, "-p", port, "-V", tc.version}
			pubProps := func(i int) []string {
				if !tc.v5 {
					return nil
				}
				return []string{"-D", "PUBLISH", "user-property", "seq", fmt.Sprint(i)}
			}
			pub := func(id string, args ...string) {
				t.Helper()
				bins.run(t, bins.pub, append(append(append([]string{}, common...), "-i", id), args...)...)
			}

			// A retained message first: it is what tells us the
			// subscriber's subscription is live, since it is sent only
			// after the SUBACK (MQTT-3.3.1-6 in 3.1.1, MQTT-3.3.1-9 in 5.0).
			pub("mq-ret-"+tc.version, append([]string{"-t", topic + "/ret", "-m", "kept", "-r", "-q", "1"}, pubProps(0)...)...)

			// -C 4: the retained message and three live ones, then a
			// clean exit. -W bounds the wait should any not arrive.
			format := "MSG|%t|%q|%r|%p"
			subArgs := append(append([]string{}, common...), "-i", "mq-sub-"+tc.version,
				"-t", topic+"/#", "-q", "2", "-C", "4", "-W", "20")
			if tc.v5 {
				format += "|%S|%P"
				subArgs = append(subArgs, "-D", "SUBSCRIBE", "subscription-identifier", "9")
			}
			sub := bins.start(t, bins.sub, append(subArgs, "-F", format)...)

			want := func(topic string, qos int, retained bool, payload string, seq int) string {
				r := 0
				if retained {
					r = 1
				}
				line := fmt.Sprintf("MSG|%s|%d|%d|%s", topic, qos, r, payload)
				if tc.v5 {
					// The subscription identifier (MQTT-3.3.4-3) and the
					// user property, unaltered (MQTT-3.3.2-17).
					line += fmt.Sprintf("|9|seq:%d", seq)
				}
				return line
			}
			// MQTT-3.3.1-8 (3.1.1) / MQTT-3.3.1-9 (5.0): RETAIN 1 for a
			// message sent for a new subscription, at the QoS it was
			// published with (under the subscription's 2).
			if got, w := sub.line(), want(topic+"/ret", 1, true, "kept", 0); got != w {
				t.Fatalf("retained: got %q, want %q", got, w)
			}
			// QoS 0, 1 and 2 live, in order (MQTT-4.6.0-6 in 3.1.1,
			// MQTT-4.6.0-5 in 5.0), RETAIN 0 (MQTT-3.3.1-9 in 3.1.1,
			// MQTT-3.3.1-12 in 5.0).
			for q := 0; q <= 2; q++ {
				pub(fmt.Sprintf("mq-pub%d-%s", q, tc.version),
					append([]string{"-t", topic + "/live", "-m", fmt.Sprintf("m%d", q), "-q", fmt.Sprint(q)}, pubProps(q+1)...)...)
			}
			for q := 0; q <= 2; q++ {
				if got, w := sub.line(), want(topic+"/live", q, false, fmt.Sprintf("m%d", q), q+1); got != w {
					t.Fatalf("live QoS %d: got %q, want %q", q, got, w)
				}
			}
			// The fourth message ends mosquitto_sub cleanly: it
			// disconnects and exits 0.
			if err := sub.wait(10 * time.Second); err != nil {
				t.Fatalf("mosquitto_sub -C 4: %v", err)
			}

			// mosquitto_pub -r -n (an empty retained message) deletes
			// the retained message (MQTT-3.3.1-10 in 3.1.1, MQTT-3.3.1-6
			// in 5.0): a new subscription gets nothing.
			pub("mq-del-"+tc.version, "-t", topic+"/ret", "-r", "-n", "-q", "1")
			v := packet.V311
			if tc.v5 {
				v = packet.V5
			}
			check := connectRaw(t, e.addr(0), v, "mq-check-"+tc.version)
			check.subscribe(1, packet.Subscription{Filter: topic + "/ret", QoS: 1})
			check.expectNone(300 * time.Millisecond)
		})
	}
}

// mosquittoBins are the paths of the mosquitto command-line clients and
// the environment they run in.
type mosquittoBins struct {
	sub, pub string
	env      []string
}

// requireMosquitto finds mosquitto_sub and mosquitto_pub, failing the test
// (not skipping it: a skipped interop test passes unnoticed in CI) when
// they are missing.
func requireMosquitto(t *testing.T) *mosquittoBins {
	t.Helper()
	var b mosquittoBins
	var missing []string
	for _, bin := range []struct {
		name string
		path *string
	}{{"mosquitto_sub", &b.sub}, {"mosquitto_pub", &b.pub}} {
		path, err := exec.LookPath(bin.name)
		if err != nil {
			missing = append(missing, bin.name)
			continue
		}
		*bin.path = path
	}
	if len(missing) > 0 {
		t.Fatalf("%s not found on PATH: install Debian's mosquitto-clients package "+
			"(apt-get update && apt-get install -y mosquitto-clients; .ci/run does this before make test)",
			strings.Join(missing, " and "))
	}
	// Their config files ($HOME/.config/mosquitto_sub and the like) must
	// not add options to the ones a test gives.
	home := t.TempDir()
	b.env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home)
	return &b
}

// run runs a client to completion, failing the test unless it exits 0
// within 10s.
func (b *mosquittoBins) run(t *testing.T, bin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = b.env
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
}

// mosquittoProc is a running client whose stdout is read line by line.
type mosquittoProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	stderr bytes.Buffer
	done   chan struct{} // closed once Wait has returned
	err    error         // Wait's result, set before done is closed
}

// start starts a client; when the test ends it is killed if still running,
// and waited for.
func (b *mosquittoBins) start(t *testing.T, bin string, args ...string) *mosquittoProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &mosquittoProc{t: t, lines: make(chan string, 1024), done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, bin, args...)
	p.cmd.Env = b.env
	p.cmd.WaitDelay = time.Second
	pr, pw := io.Pipe()
	p.cmd.Stdout = pw
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", bin, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer close(p.lines)
		s := bufio.NewScanner(pr)
		for s.Scan() {
			p.lines <- s.Text()
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		<-scanned
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// line returns the next line of output, failing the test after 10s or if
// the process ends first.
func (p *mosquittoProc) line() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.done
			p.t.Fatalf("%s ended before the next line: %v\n%s", p.cmd.Path, p.err, p.stderr.String())
		}
		return l
	case <-time.After(10 * time.Second):
		p.t.Fatalf("no line from %s in 10s", p.cmd.Path)
		return ""
	}
}

// wait waits for the process to exit by itself and returns its error,
// with stderr and any output not read yet.
func (p *mosquittoProc) wait(d time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		return fmt.Errorf("still running after %v", d)
	}
	var rest []string
	for l := range p.lines {
		rest = append(rest, l)
	}
	switch {
	case p.err != nil:
		return fmt.Errorf("%w (stderr %q, unread output %q)", p.err, p.stderr.String(), rest)
	case len(rest) > 0:
		return fmt.Errorf("exited 0 with unread output %q", rest)
	}
	return nil
}
