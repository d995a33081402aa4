package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestBadFlagsExitTwoWithOneLine(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"store", "--bogus"}, "-bogus"},
		{[]string{"store", "--gossip", "nohost"}, "-gossip"},
		{[]string{"store", "--bootstrap-expect", "-1"}, "-bootstrap-expect"},
		{[]string{"store", "--raft-rtt-ms", "1"}, "-raft-rtt-ms"},
		{[]string{"store", "--join", "a,b:1"}, "-join"},
		{[]string{"store", "--log-level", "loud"}, "-log-level"},
		{[]string{"nonsense"}, "unknown command"},
		{[]string{"admin"}, "missing command"},
		{[]string{"admin", "kv", "get"}, "want 1 argument"},
		{[]string{"admin", "kv", "frob"}, "unknown subcommand"},
		{[]string{"admin", "add-replica", "--range", "1"}, "--store are required"},
		{[]string{"admin", "kv", "scan", "--limit", "5000"}, "--limit"},
		{[]string{"frontend"}, "-join is required"},
		{[]string{"frontend", "--join", "127.0.0.1:1", "--mqtt-tls", ":8883"}, "-tls-cert"},
		{[]string{"standalone", "--mqtt", "nohost"}, "-mqtt"},
		{[]string{"standalone", "--mqtt-max-packet-size", "10"}, "-mqtt-max-packet-size"},
		{[]string{"standalone", "--mqtt-max-queued-bytes", "100"}, "-mqtt-max-queued-bytes"},
		{[]string{"standalone", "--users-file", "/nonexistent/users"}, "users-file"},
		{[]string{"admin", "split", "--key", "m"}, "--range or --keyspace"},
		{[]string{"admin", "split", "--range", "1", "--keyspace", "kv", "--key", "m"}, "--range or --keyspace"},
		{[]string{"admin", "merge"}, "--range is required"},
		{[]string{"admin", "balancer", "frob"}, "status, pause or resume"},
		{[]string{"store", "--merge-bytes", "10", "--split-bytes", "5"}, "-merge-bytes"},
		{[]string{"store", "--replication-factor", "0"}, "-replication-factor"},
		{[]string{"store", "--merge-delay", "-1s"}, "-merge-delay"},
		{[]string{"store", "--cache-size", "lots"}, "-cache-size"},
		{[]string{"store", "--memtable-size", "8GiB"}, "-memtable-size"},
		{[]string{"standalone", "--cache-size", "10kB"}, "-cache-size"},
		{[]string{"store", "--keyspace-replication", "dist=9"}, "-keyspace-replication"},
		{[]string{"store", "--keyspace-replication", "mail=3"}, "-keyspace-replication"},
		{[]string{"store", "--keyspace-replication", "dist"}, "-keyspace-replication"},
	}
	for _, tc := range tests {
		code, _, stderr := runCLI(tc.args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: stderr %q, want one line naming %q", tc.args, stderr, tc.want)
		}
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		body, want string
	}{
		{"gossip = \"nohost\"\n", "-gossip"},
		{"frobnicate = 1\n", "unknown setting \"frobnicate\""},
		{"bootstrap-expect = \"x\"\n", "bootstrap-expect"},
		{"this is not toml", "config file"},
		{"split-bytes = 10\nmerge-bytes = 20\n", "-merge-bytes"},
	}
	for i, tc := range tests {
		code, _, stderr := runCLI("store", "--config", write(fmt.Sprintf("c%d.toml", i), tc.body))
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("config %q: exit %d, %q; want 2 naming %q", tc.body, code, stderr, tc.want)
		}
	}
	// The MQTT settings of standalone and frontend, [[acl]] tables included.
	for i, tc := range []struct{ body, want string }{
		{"[[acl]]\nallow = true\nfrob = 1\n", "unknown key \"frob\""},
		{"[[acl]]\nallow = true\naction = \"shout\"\ntopic = \"a/#\"\n", "acl[0]"},
		{"[[acl]]\nallow = \"yes\"\n", "bad value for allow"},
		{"mqtt-max-packet-size = 1\n", "-mqtt-max-packet-size"},
	} {
		code, _, stderr := runCLI("standalone", "--config", write(fmt.Sprintf("m%d.toml", i), tc.body))
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("config %q: exit %d, %q; want 2 naming %q", tc.body, code, stderr, tc.want)
		}
	}
	// A flag on the command line wins over the file.
	code, _, stderr := runCLI("store", "--config", write("ok.toml", "gossip = \"nohost\"\n"), "--gossip", "127.0.0.1:1", "--raft", "bad")
	if code != 2 || !strings.Contains(stderr, "-raft") {
		t.Errorf("the command line must win over the file: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI("store", "--config", filepath.Join(dir, "missing.toml")); code != 2 || !strings.Contains(stderr, "missing.toml") {
		t.Errorf("a missing config file: exit %d, %q", code, stderr)
	}
}

func TestEnvironmentSetsFlags(t *testing.T) {
	t.Setenv("BIFROST_GOSSIP", "bad")
	code, _, stderr := runCLI("store")
	if code != 2 || !strings.Contains(stderr, "BIFROST_GOSSIP") && !strings.Contains(stderr, "-gossip") {
		t.Fatalf("a bad BIFROST_GOSSIP: exit %d, %q", code, stderr)
	}
}

func TestAdminAgainstACluster(t *testing.T) {
	c := rangestest.Start(t, 1, rangestest.Options{})
	addr := c.Addr(0)
	if code, _, stderr := runCLI("admin", "--addr", addr, "kv", "put", "k1", "v1"); code != 0 {
		t.Fatalf("put: exit %d: %s", code, stderr)
	}
	code, out, _ := runCLI("admin", "kv", "get", "k1", "--json", "--addr", addr)
	var got struct {
		Key, Value string
		Found      bool
	}
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Key != "k1" || got.Value != "v1" || !got.Found {
		t.Fatalf("get --json: exit %d, %q", code, out)
	}
	if code, out, _ := runCLI("admin", "--addr", addr, "--json", "kv", "get", "absent"); code != 1 || !strings.Contains(out, `"found": false`) {
		t.Fatalf("get of an absent key: exit %d, %q", code, out)
	}
	if code, _, stderr := runCLI("admin", "--addr", addr, "kv", "cas", "k1", "wrong", "v2"); code != 1 || !strings.Contains(stderr, "holds \"v1\"") {
		t.Fatalf("cas mismatch: exit %d, %q", code, stderr)
	}
	if code, _, _ := runCLI("admin", "--addr", addr, "kv", "cas", "k1", "v1", "v2"); code != 0 {
		t.Fatalf("cas match: exit %d", code)
	}
	if code, _, _ := runCLI("admin", "--addr", addr, "kv", "cas", "--absent", "k2", "new"); code != 0 {
		t.Fatalf("cas --absent: exit %d", code)
	}
	code, out, _ = runCLI("admin", "--addr", addr, "ranges", "--json")
	var rs []struct {
		ID       uint64   `json:"id"`
		Keyspace string   `json:"keyspace"`
		Start    string   `json:"start"`
		End      string   `json:"end"`
		Ver      uint64   `json:"ver"`
		Replicas []string `json:"replicas"` // store IDs are strings: 64-bit
		Leader   string   `json:"leader"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 4 {
		t.Fatalf("ranges --json: exit %d, %q", code, out)
	}
	storeID := c.Nodes[0].Store().ID()
	for _, r := range rs {
		if r.Ver != 1 || len(r.Replicas) != 1 || r.Replicas[0] != strconv.FormatUint(storeID, 10) || r.Leader != r.Replicas[0] {
			t.Errorf("range %+v, want ver 1 on store %d", r, storeID)
		}
	}
	code, out, _ = runCLI("admin", "--addr", addr, "kv", "scan", "--json")
	if code != 0 || !strings.Contains(out, `"k1"`) || !strings.Contains(out, `"k2"`) {
		t.Fatalf("scan: exit %d, %q", code, out)
	}
	if code, out, _ := runCLI("admin", "--addr", addr, "cluster"); code != 0 || !strings.Contains(out, "store") {
		t.Fatalf("cluster: exit %d, %q", code, out)
	}
	code, out, _ = runCLI("admin", "--addr", addr, "--json", "split", "--keyspace", "kv", "--key", "k2")
	var sp struct {
		Left, Right struct {
			ID         uint64
			Start, End string
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &sp) != nil || sp.Left.End != "k2" || sp.Right.Start != "k2" {
		t.Fatalf("split: exit %d, %q", code, out)
	}
	if code, _, stderr := runCLI("admin", "--addr", addr, "split", "--range", fmt.Sprint(sp.Right.ID), "--key", "k2"); code != 1 || !strings.Contains(stderr, "strictly inside") {
		t.Fatalf("split at a range's start: exit %d, %q", code, stderr)
	}
	if code, out, _ := runCLI("admin", "--addr", addr, "merge", "--range", fmt.Sprint(sp.Left.ID)); code != 0 || !strings.Contains(out, "ver") {
		t.Fatalf("merge: exit %d, %q", code, out)
	}
	if code, _, stderr := runCLI("admin", "--addr", addr, "merge", "--range", fmt.Sprint(sp.Left.ID)); code != 1 || !strings.Contains(stderr, "no right neighbour") {
		t.Fatalf("merge of the last range: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI("admin", "--addr", addr, "transfer-leader", "--range", "77", "--store", "1"); code != 1 || !strings.Contains(stderr, "unknown range") {
		t.Fatalf("transfer-leader of an unknown range: exit %d, %q", code, stderr)
	}
}
