package retain_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// Every replica of the retain ranges answers a match from its own state (a
// local read, no ReadIndex) the same as a linearizable match through the
// router, after sets, a delete and a split in the middle of a tenant's topics.
func TestRetainSameOnEveryReplicaAcrossSplit(t *testing.T) {
	c := startRetainCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := retain.NewClient(c.Nodes[0].Router())
	set := func(topic, payload string) {
		t.Helper()
		if _, err := cl.Set(ctx, &retainpb.SetRequest{Tenant: "acme", Message: &retainpb.Message{Topic: topic, Payload: []byte(payload)}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 30; i++ {
		set(fmt.Sprintf("room/%02d/temp", i), fmt.Sprint(i))
	}
	set("room/07/temp", "") // deleted
	set("room/08/temp", "eight")
	if _, err := c.Client(0).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "retain", Key: retain.Key("acme", "room/15")}); err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	set("room/20/temp", "twenty")
	for _, filter := range []string{"room/+/temp", "#"} {
		r, err := retain.NewClient(c.Nodes[1].Router()).Match(ctx, &retainpb.MatchRequest{Tenant: "acme", Filter: filter})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, m := range r.Messages {
			want = append(want, m.Topic+"="+string(m.Payload))
		}
		sort.Strings(want)
		if len(want) != 29 || !strings.Contains(fmt.Sprint(want), "room/08/temp=eight") || !strings.Contains(fmt.Sprint(want), "room/20/temp=twenty") {
			t.Fatalf("%s through the router: %v", filter, want)
		}
		retainSameOnEveryReplica(t, c, "acme", filter, fmt.Sprint(want))
	}
}

// retainSameOnEveryReplica matches a filter on each store's own replica of
// every retain range until every store's answer is want.
func retainSameOnEveryReplica(t *testing.T, c *rangestest.Cluster, tenant, filter, want string) {
	t.Helper()
	input, _ := proto.Marshal(&retainpb.MatchRequest{Tenant: tenant, Filter: filter, Limit: retain.DefaultMatchLimit})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var answers []string
		for _, n := range c.Nodes {
			var all []string
			nr := 0
			for _, r := range n.Store().Replicas() {
				d := r.Descriptor
				if d == nil || d.Keyspace != kvpb.Keyspace_KEYSPACE_RETAIN {
					continue
				}
				nr++
				q := &kvpb.Query{Ver: d.Ver, Ops: []*kvpb.Op{{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: d.Start, Input: input}}}}}
				res, err := n.Store().Read(context.Background(), r.RangeID, q, true)
				if err != nil || res.Status != kvpb.Status_STATUS_OK {
					all = append(all, fmt.Sprintf("error %v %v", err, res.GetStatus()))
					continue
				}
				out := &retainpb.MatchResponse{}
				_ = proto.Unmarshal(res.Results[0].Value, out)
				for _, m := range out.Messages {
					all = append(all, m.Topic+"="+string(m.Payload))
				}
			}
			sort.Strings(all)
			answers = append(answers, fmt.Sprintf("%d ranges %v", nr, all))
		}
		w := "2 ranges " + want
		if answers[0] == w && answers[1] == w && answers[2] == w {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: replicas disagree or differ from %s:\n%s\n%s\n%s", filter, w, answers[0], answers[1], answers[2])
		}
		time.Sleep(100 * time.Millisecond)
	}
}
