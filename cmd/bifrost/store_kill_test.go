package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// storeProc is one `bifrost store` process of a test cluster, restartable
// on the same data directory and addresses.
type storeProc struct {
	args []string
	grpc string
	p    *proc
	runs int
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bifrost")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func (s *storeProc) start(t *testing.T, bin string, i int) {
	s.runs++
	s.p = startProc(t, bin, fmt.Sprintf("store%d-run%d.log", i, s.runs), s.args...)
}

// waitKeys reads every key through cl (linearizable reads) until all are
// there or the deadline passes; a key missing after that is a lost write.
func waitKeys(t *testing.T, cl *ranges.Client, keys []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, k := range keys {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			v, found, err := cl.Get(ctx, []byte(k))
			cancel()
			if err == nil {
				if !found || string(v) != "v" {
					t.Fatalf("acknowledged write %s lost (found %v, value %q)", k, found, v)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("read %s: %v", k, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// kvLeader is the store ID leading the kv keyspace's range, 0 when unknown.
func kvLeader(cl *ranges.Client) (uint64, uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := cl.Admin.Ranges(ctx, &rangespb.RangesRequest{})
	if err != nil {
		return 0, 0
	}
	for _, r := range resp.Ranges {
		if r.Range.GetKeyspace() == kvpb.Keyspace_KEYSPACE_KV && r.LeaderReplicaId != 0 {
			for _, rep := range r.Range.Replicas {
				if rep.ReplicaId == r.LeaderReplicaId {
					return r.Range.Id, rep.StoreId
				}
			}
		}
	}
	return 0, 0
}

// TestStoreProcessesSIGKILLed runs three real `bifrost store` processes and
// kills them with SIGKILL, no shutdown path: writes acknowledged while the
// kv range's leader is killed survive; the killed store restarts from its
// data directory, catches up and leads again; then all three are killed at
// once and restarted, and every acknowledged key is still there.
func TestStoreProcessesSIGKILLed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	var stores []*storeProc
	var gossips []string
	for i := 0; i < 3; i++ {
		gossips = append(gossips, rangestest.FreeAddr(t))
	}
	for i := 0; i < 3; i++ {
		s := &storeProc{grpc: rangestest.FreeAddr(t)}
		s.args = []string{"store", "--data", filepath.Join(t.TempDir(), "data"),
			"--gossip", gossips[i], "--join", strings.Join(gossips, ","), "--bootstrap-expect", "3",
			"--raft", rangestest.FreeAddr(t), "--grpc", s.grpc, "--http", "",
			"--raft-rtt-ms", "20", "--balancer-paused", "--name", fmt.Sprintf("s%d", i)}
		s.start(t, bin, i)
		stores = append(stores, s)
	}
	clients := make([]*ranges.Client, 3)
	for i, s := range stores {
		cl, err := ranges.Dial(s.grpc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		clients[i] = cl
	}
	// The cluster is up once the kv range has a leader all stores know.
	var rangeID, leaderStore uint64
	deadline := time.Now().Add(60 * time.Second)
	for {
		rangeID, leaderStore = kvLeader(clients[0])
		if leaderStore != 0 {
			if _, l := kvLeader(clients[1]); l == leaderStore {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no kv leader after 60 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Store IDs to process indexes, from the cluster's member list.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	members, err := clients[0].Admin.Cluster(ctx, &rangespb.ClusterRequest{})
	cancel()
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	byStore := map[uint64]int{}
	storeOf := map[int]uint64{}
	for _, m := range members.Members {
		for i, s := range stores {
			if m.GrpcAddr == s.grpc {
				byStore[m.StoreId], storeOf[i] = i, m.StoreId
			}
		}
	}
	// A fourth store joins and holds no replica (the balancer is paused):
	// it is healthy all the same once it knows the cluster's ranges.
	httpAddr := rangestest.FreeAddr(t)
	startProc(t, bin, "store3.log", "store", "--data", filepath.Join(t.TempDir(), "data"),
		"--gossip", rangestest.FreeAddr(t), "--join", gossips[0], "--raft", rangestest.FreeAddr(t),
		"--grpc", rangestest.FreeAddr(t), "--http", httpAddr, "--raft-rtt-ms", "20", "--balancer-paused")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("a store with no replica never turned healthy: %v %v", resp, err)
		}
	}
	victim, ok := byStore[leaderStore]
	if !ok || len(byStore) != 3 {
		t.Fatalf("members %v, leader store %d", members.Members, leaderStore)
	}
	writer := clients[(victim+1)%3]

	// A client writes while the leader's store is SIGKILLed.
	var mu sync.Mutex
	var acked []string
	countAcked := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("w%05d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			if writer.Put(ctx, []byte(k), []byte("v")) == nil {
				mu.Lock()
				acked = append(acked, k)
				mu.Unlock()
			}
			cancel()
		}
	}()
	waitCount := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for countAcked() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d writes acknowledged, want %d", what, countAcked(), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCount(100, "before the kill")
	stores[victim].p.kill()
	killedAt := countAcked()
	waitCount(killedAt+100, "after the leader's store was killed")
	close(stop)
	wg.Wait()
	keys := append([]string(nil), acked...)
	t.Logf("%d writes acknowledged, %d of them after the kill", len(keys), len(keys)-killedAt)
	waitKeys(t, writer, keys, 30*time.Second)

	// The killed store restarts from its data directory and catches up:
	// once it leads the range again it serves every key.
	stores[victim].start(t, bin, victim)
	deadline = time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := writer.Admin.TransferLeader(ctx, &rangespb.TransferLeaderRequest{RangeId: rangeID, StoreId: storeOf[victim]})
		cancel()
		if _, l := kvLeader(clients[victim]); err == nil && l == storeOf[victim] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted store did not take the lead back: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	waitKeys(t, clients[victim], keys, 30*time.Second)

	// Every store SIGKILLed at once, then restarted: nothing acknowledged is lost.
	for _, s := range stores {
		s.p.kill()
	}
	for i, s := range stores {
		s.start(t, bin, i)
	}
	waitKeys(t, clients[0], keys, 60*time.Second)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clients[2].Put(ctx, []byte("after-restart"), []byte("v")); err != nil {
		t.Fatalf("a write after the whole-cluster restart: %v", err)
	}
}
