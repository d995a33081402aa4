package ranges_test

import (
	"context"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// A gateway (a frontend's view of the cluster) holds no data and reaches
// every range, also after one moves by a split.
func TestGatewayRoutesWithoutAStore(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	g, err := ranges.StartGateway(ranges.GatewayConfig{Name: "frontend-1", GossipAddr: rangestest.FreeAddr(t),
		Join: []string{c.GossipAddr(0)}, FastGossip: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	put := func(k string) {
		t.Helper()
		op := &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: []byte(k), Value: []byte("v")}}}
		if _, err := g.Router().Write(ctx, kvpb.Keyspace_KEYSPACE_KV, []byte(k), nil, op); err != nil {
			t.Fatalf("put %s through the gateway: %v", k, err)
		}
	}
	put("a")
	put("z")
	if _, err := c.Client(0).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "kv", Key: []byte("m")}); err != nil {
		t.Fatal(err)
	}
	put("y")
	expectValue(t, c.Client(1), "y", "v")
	roles := map[string]bool{}
	for _, m := range c.Nodes[0].Membership().Members() {
		roles[m.Meta.Role] = true
	}
	if !roles[ranges.RoleFrontend] {
		t.Fatalf("the stores do not see the gateway in gossip: %v", roles)
	}
}
