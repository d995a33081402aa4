package ui_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// chromiumFlags run Debian's chromium headless with nothing of its own on
// the network, in a profile of the test's.
var chromiumFlags = []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
	"--hide-scrollbars", "--virtual-time-budget=8000"}

// runChromium runs chromium on a URL with more flags and returns its
// standard output. Chromium's processes are in a group of their own, all
// killed when it is done or the time is up.
func runChromium(t *testing.T, url string, flags ...string) []byte {
	t.Helper()
	bin := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append(append(append([]string{}, chromiumFlags...), "--user-data-dir="+t.TempDir()), flags...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers it left, if any
	}
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(flags, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// chromium returns the path of Debian's chromium, failing the test when
// it is not installed.
func chromium(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: `make test-deps` installs it (apt-get install -y chromium)")
	}
	return bin
}

// artifactDir is where the test keeps what a reader looks at afterwards:
// $BIFROST_ARTIFACTS (make test sets it), else the test's temporary directory.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("BIFROST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestStatusPageInChromium loads the status page of a real cluster (a
// standalone node with 34 ranges and a second frontend) in headless
// Chromium: the rendered page shows every range by id in its keyspace, the
// keyspace of more than 20 ranges folded, the members, and the sessions
// online on each frontend; a screenshot is kept.
func TestStatusPageInChromium(t *testing.T) {
	chromium(t)
	tc := startCluster(t)
	var keys []string
	for i := 0; i < 30; i++ {
		keys = append(keys, fmt.Sprintf("sensor/%02d", i))
	}
	tc.split(t, keys...)
	dashboard := connect(t, tc.front, "dashboard")
	if tok := dashboard.Subscribe("sensor/#", 0, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pub := connect(t, tc.front, "publisher")
	connect(t, tc.gwFront, "device-1")
	connect(t, tc.gwFront, "device-2")
	connect(t, tc.gwFront, "device-3")
	// A trickle of messages for the rates while the page is read.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				pub.Publish("sensor/temp", 0, false, "21.5").WaitTimeout(time.Second)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, 30*time.Second, func() error {
		s, err := getStatus(t, tc.page.URL)
		if err != nil {
			return err
		}
		if f := frontend(s, tc.gwName); f == nil || f.Sessions == nil || *f.Sessions != 3 {
			return fmt.Errorf("frontend %s: %+v, want 3 sessions", tc.gwName, f)
		}
		if f := frontend(s, tc.node.Name()); f == nil || f.InPerSec == nil || *f.InPerSec == 0 {
			return fmt.Errorf("frontend %s: %+v, want a message rate", tc.node.Name(), f)
		}
		return nil
	})

	dom := string(runChromium(t, tc.page.URL+"/", "--dump-dom"))
	if !strings.Contains(dom, `data-keyspace=`) {
		t.Fatalf("the page rendered no keyspaces:\n%s", dom)
	}
	infos := tc.adminRanges(t)
	if len(infos) < 34 {
		t.Fatalf("%d ranges, want the 4 first ones and 30 splits", len(infos))
	}
	for _, info := range infos {
		ks := strings.ToLower(strings.TrimPrefix(info.Range.Keyspace.String(), "KEYSPACE_"))
		// The range's row, inside its keyspace's details.
		section := regexp.MustCompile(`(?s)<details data-keyspace="` + ks + `".*?</details>`).FindString(dom)
		if !strings.Contains(section, fmt.Sprintf(`<tr data-range="%d">`, info.Range.Id)) {
			t.Errorf("range %d (%s) is not on the page in its keyspace", info.Range.Id, ks)
		}
	}
	for _, want := range []string{
		`<details data-keyspace="kv">`,           // 31 ranges: folded
		`<details data-keyspace="dist" open="">`, // one: open
		"sensor/07",
		`<tr data-member="` + tc.node.Name() + `">`,
		`<tr data-member="` + tc.gwName + `">`,
		// A random 64-bit store ID, digit for digit.
		fmt.Sprintf("<td>%d</td>", tc.node.Store().ID()),
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	sessions := regexp.MustCompile(`<tr data-frontend="([^"]+)"><td>[^<]*</td><td class="num">(\d+)</td>`).FindAllStringSubmatch(dom, -1)
	got := map[string]string{}
	for _, m := range sessions {
		got[m[1]] = m[2]
	}
	if got[tc.node.Name()] != "2" || got[tc.gwName] != "3" {
		t.Errorf("sessions online on the page: %v, want %s 2 and %s 3", got, tc.node.Name(), tc.gwName)
	}
	if t.Failed() {
		t.Logf("the page:\n%s", dom)
	}

	// Filtered (the filter in the address): the folded keyspace opens on
	// the ranges whose span starts or ends at the key, the others close.
	var wantRows []string
	for _, info := range infos {
		if string(info.Range.Start) == "sensor/07" || string(info.Range.End) == "sensor/07" {
			wantRows = append(wantRows, fmt.Sprint(info.Range.Id))
		}
	}
	sort.Strings(wantRows)
	dom = string(runChromium(t, tc.page.URL+"/#filter=sensor%2F07", "--dump-dom"))
	var rows []string
	for _, m := range regexp.MustCompile(`<tr data-range="(\d+)">`).FindAllStringSubmatch(dom, -1) {
		rows = append(rows, m[1])
	}
	sort.Strings(rows)
	if len(wantRows) != 2 || !slices.Equal(rows, wantRows) ||
		!strings.Contains(dom, `<details data-keyspace="kv" open="">`) || !strings.Contains(dom, `<details data-keyspace="dist">`) {
		t.Errorf("filtered by sensor/07: rows %v, want %v, kv open and dist folded", rows, wantRows)
	}

	shot := filepath.Join(artifactDir(t), "status-page.png")
	runChromium(t, tc.page.URL+"/", "--window-size=1280,1100", "--screenshot="+shot)
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10000 {
		t.Fatalf("%s: %d bytes, not a screenshot", shot, len(png))
	}
	t.Logf("screenshot of the status page: %s", shot)
}
