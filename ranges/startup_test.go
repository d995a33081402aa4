package ranges_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestRequestsWhileStartingDoNotCrash: a store served gRPC before its gossip
// membership existed, and a request that had to look for a route then
// dereferenced the missing membership and crashed the process (found by the
// jepsen harness probing stores as they started). The gossip join here is
// held up by a seed that accepts connections and never answers, while a
// client keeps asking the store for a key.
func TestRequestsWhileStartingDoNotCrash(t *testing.T) {
	seed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := seed.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	grpcAddr := rangestest.FreeAddr(t)
	cfg := ranges.NodeConfig{
		Store:      kvstore.Config{DataDir: filepath.Join(t.TempDir(), "store"), RaftAddr: rangestest.FreeAddr(t), SmallLogDB: true},
		GossipAddr: rangestest.FreeAddr(t), GRPCAddr: grpcAddr, Join: []string{seed.Addr().String()},
		FastGossip: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	cl, err := ranges.Dial(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			cl.KV.Get(ctx, &rangespb.GetRequest{Key: []byte("k")})
			cl.Admin.Ranges(ctx, &rangespb.RangesRequest{})
			cancel()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	n, err := ranges.StartNode(cfg)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	// Started, it answers: no range yet, a typed error, not a crash.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := cl.Get(ctx, []byte("k")); err == nil {
		t.Fatal("a store with no ranges served a read")
	}
}
