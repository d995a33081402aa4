package dist_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

func startCluster(t *testing.T) *rangestest.Cluster {
	return rangestest.Start(t, 3, rangestest.Options{
		Coprocessors: map[kvpb.Keyspace]kvstore.CoprocessorFactory{kvpb.Keyspace_KEYSPACE_DIST: dist.New},
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func route(tenant, sub, id string) *distpb.Route {
	return &distpb.Route{Tenant: tenant, Subscription: sub, Receiver: &distpb.Receiver{Kind: 1, Id: id}}
}

// matchSet renders a match as sorted "subscription>receiver" strings, with
// the member of a shared group replaced by the group (members vary by seed).
func matchSet(tm *distpb.TopicMatches) []string {
	var out []string
	for _, m := range tm.Matched {
		if sub, _ := dist.ParseSubscription(m.Subscription); sub.Group != "" {
			out = append(out, m.Subscription+">group")
		} else {
			out = append(out, m.Subscription+">"+m.Receiver.Id)
		}
	}
	sort.Strings(out)
	return out
}

func TestDistOnThreeReplicasAcrossSplitAndRestart(t *testing.T) {
	c := startCluster(t)
	cl := dist.NewClient(c.Nodes[0].Router())
	ctx := ctxT(t)
	// Routes of two tenants; tenant "acme" gets many so that a split can cut them.
	type rt struct{ tenant, sub, id string }
	var routes []rt
	for i := 0; i < 40; i++ {
		routes = append(routes, rt{"acme", fmt.Sprintf("dev/%02d/+", i), fmt.Sprintf("fe%d", i%3)})
	}
	routes = append(routes,
		rt{"acme", "dev/#", "audit"}, rt{"acme", "$share/g/dev/+/cmd", "w1"}, rt{"acme", "$share/g/dev/+/cmd", "w2"},
		rt{"acme", "$oshare/o/dev/#", "w3"}, rt{"other", "dev/#", "x"}, rt{"acme", "#", "all"})
	for _, r := range routes {
		out, err := cl.AddRoute(ctx, &distpb.AddRouteRequest{Route: route(r.tenant, r.sub, r.id)})
		if err != nil || out.Result != distpb.Result_RESULT_OK {
			t.Fatalf("add %v: %v %v", r, out, err)
		}
	}
	if out, _ := cl.AddRoute(ctx, &distpb.AddRouteRequest{Route: route("acme", "dev/#", "audit")}); out.Result != distpb.Result_RESULT_EXISTS {
		t.Fatalf("duplicate add: %v", out)
	}
	if out, _ := cl.AddRoute(ctx, &distpb.AddRouteRequest{Route: route("acme", "a/#/b", "x")}); out.Result != distpb.Result_RESULT_INVALID {
		t.Fatalf("bad filter: %v", out)
	}
	if out, _ := cl.AddRoute(ctx, &distpb.AddRouteRequest{Route: route("lim", "a", "x"), MaxRoutesPerTenant: 1}); out.Result != distpb.Result_RESULT_OK {
		t.Fatalf("first route under a limit: %v", out)
	}
	if out, _ := cl.AddRoute(ctx, &distpb.AddRouteRequest{Route: route("lim", "b", "x"), MaxRoutesPerTenant: 1}); out.Result != distpb.Result_RESULT_LIMIT {
		t.Fatalf("route over the limit: %v", out)
	}
	topics := []string{"dev/07/cmd", "dev/33/x", "dev", "$SYS/x", "other/x"}
	oracle := func(tenant string) [][]string {
		var want [][]string
		for _, topic := range topics {
			var set []string
			groups := map[string]bool{}
			for _, r := range routes {
				sub, _ := dist.ParseSubscription(r.sub)
				if r.tenant != tenant || !dist.MatchFilter(sub.Filter, topic) {
					continue
				}
				if sub.Group != "" {
					if !groups[r.sub] {
						set = append(set, r.sub+">group")
					}
					groups[r.sub] = true
				} else {
					set = append(set, r.sub+">"+r.id)
				}
			}
			sort.Strings(set)
			want = append(want, set)
		}
		return want
	}
	check := func(when string, cl *dist.Client) {
		t.Helper()
		resp, err := cl.Match(ctx, &distpb.MatchRequest{Tenant: "acme", Topics: topics, Publisher: "p", Seed: 1})
		if err != nil {
			t.Fatalf("%s: match: %v", when, err)
		}
		want := oracle("acme")
		for i, tm := range resp.Topics {
			if got := matchSet(tm); !slices.Equal(got, want[i]) {
				t.Fatalf("%s: topic %q matched %v, want %v", when, topics[i], got, want[i])
			}
		}
	}
	check("three replicas", cl)

	// Every replica answers the same from its own state (a stale read of each).
	sameOnEveryReplica(t, c, "acme", topics)

	// Split the dist range in the middle of acme's routes: every match still whole.
	resp, err := c.Client(1).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "dist", Key: []byte("acme\x00dev\x0020\x00")})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	check("after split", dist.NewClient(c.Nodes[2].Router()))
	sameOnEveryReplica(t, c, "acme", topics)
	// Removing a route on the right side is seen by matches.
	if out, err := cl.RemoveRoute(ctx, &distpb.RemoveRouteRequest{Route: route("acme", "dev/33/+", "fe0")}); err != nil || out.Result != distpb.Result_RESULT_OK {
		t.Fatalf("remove: %v %v", out, err)
	}
	routes = slices.DeleteFunc(routes, func(r rt) bool { return r.sub == "dev/33/+" })
	check("after remove", cl)

	// A restart of every store rebuilds the same tries.
	for i := range c.Nodes {
		c.StopNode(i)
	}
	for i := range c.Nodes {
		c.StartNode(i)
	}
	c.WaitReady()
	check("after restart", dist.NewClient(c.Nodes[1].Router()))
	sameOnEveryReplica(t, c, "acme", topics)

	// And a merge back.
	if _, err := c.Client(0).Admin.Merge(ctx, &rangespb.MergeRequest{RangeId: resp.Left.Id}); err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	check("after merge", cl2(c))
}

func cl2(c *rangestest.Cluster) *dist.Client { return dist.NewClient(c.Nodes[0].Router()) }

// sameOnEveryReplica queries each store's own replica of every dist range
// (no ReadIndex) until they agree, and fails if they never do.
func sameOnEveryReplica(t *testing.T, c *rangestest.Cluster, tenant string, topics []string) {
	t.Helper()
	input, _ := proto.Marshal(&distpb.MatchRequest{Tenant: tenant, Topics: topics, Publisher: "p", Seed: 1})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var answers []string
		for _, n := range c.Nodes {
			var all []string
			for _, r := range n.Store().Replicas() {
				d := r.Descriptor
				if d == nil || d.Keyspace != kvpb.Keyspace_KEYSPACE_DIST {
					continue
				}
				key := d.Start
				q := &kvpb.Query{Ver: d.Ver, Ops: []*kvpb.Op{{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: key, Input: input}}}}}
				res, err := n.Store().Read(context.Background(), r.RangeID, q, true)
				if err != nil || res.Status != kvpb.Status_STATUS_OK {
					all = append(all, fmt.Sprintf("error %v %v", err, res.GetStatus()))
					continue
				}
				out := &distpb.MatchResponse{}
				_ = proto.Unmarshal(res.Results[0].Value, out)
				for i, tm := range out.Topics {
					for _, m := range tm.Matched {
						all = append(all, fmt.Sprintf("%d:%s>%s", i, m.Subscription, m.Receiver.Id))
					}
				}
			}
			sort.Strings(all)
			answers = append(answers, fmt.Sprint(all))
		}
		if answers[0] == answers[1] && answers[1] == answers[2] && answers[0] != "[]" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas disagree:\n%s\n%s\n%s", answers[0], answers[1], answers[2])
		}
		time.Sleep(100 * time.Millisecond)
	}
}
