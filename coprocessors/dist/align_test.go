package dist_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// groupKey is the route key of a member of a shared group (kind 1), as the
// dist coprocessor lays it out.
func groupKey(tenant string, levels []string, id string) []byte {
	b := append([]byte(tenant), 0)
	for _, l := range levels {
		b = append(append(b, l...), 0)
	}
	return append(append(b, 0, 1), id...)
}

func TestDistAlignSplitKey(t *testing.T) {
	c := dist.New(1).(kvstore.SplitAligner)
	cases := []struct{ key, want string }{
		{"acme\x00$share\x00g\x00job\x00\x00\x01m10", "acme\x00$share\x00g\x00job\x00\x00"},
		{"acme\x00dev\x00+\x00\x00\x02fe1", "acme\x00dev\x00+\x00\x00"},
		{"acme\x00dev\x0020\x00", "acme\x00dev\x0020\x00"}, // between filters: kept
		{"acme\x00dev\x00\x00", "acme\x00dev\x00\x00"},     // a filter's start: kept
		{"acme", "acme"}, // no tenant end
		{"acme\x00a\x00\x00b\x00\x00\x01x", "acme\x00a\x00\x00"},                                        // a//b: the whole a... span
		{"acme\x00\x00x\x00\x00\x01id", "acme\x00\x00"},                                                 // /x
		{"acme\x00$oshare\x00o\x00d\x00#\x00\x00\x01w3\x00z", "acme\x00$oshare\x00o\x00d\x00#\x00\x00"}, // not a route key
	}
	for _, tc := range cases {
		if got := string(c.AlignSplitKey([]byte(tc.key))); got != tc.want {
			t.Errorf("AlignSplitKey(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

// A split asked for in the middle of a shared group's routes (by an admin,
// or chosen by the balancer's SplitKey) lands on the group's start, and a
// match still gives each message to exactly one member of the group, and
// one publisher's messages of a $oshare group to one member.
func TestDistSplitKeepsSharedGroupWhole(t *testing.T) {
	c := startCluster(t)
	cl := dist.NewClient(c.Nodes[0].Router())
	ctx := ctxT(t)
	add := func(sub, id string) {
		t.Helper()
		out, err := cl.AddRoute(ctx, &distpb.AddRouteRequest{Route: route("acme", sub, id)})
		if err != nil || out.Result != distpb.Result_RESULT_OK {
			t.Fatalf("add %s %s: %v %v", sub, id, out, err)
		}
	}
	add("a/x", "before")
	for i := 0; i < 24; i++ {
		add("$share/g/job", fmt.Sprintf("m%02d", i))
		add("$oshare/o/job", fmt.Sprintf("o%02d", i))
	}
	add("z/x", "after")

	// The balancer's split key: the middle of the data is inside a group.
	var dr uint64
	for _, r := range c.Nodes[0].Store().Replicas() {
		if r.Descriptor != nil && r.Descriptor.Keyspace == kvpb.Keyspace_KEYSPACE_DIST {
			dr = r.RangeID
		}
	}
	shareStart := "acme\x00$share\x00g\x00job\x00\x00"
	oshareStart := "acme\x00$oshare\x00o\x00job\x00\x00"
	deadline := time.Now().Add(10 * time.Second)
	for {
		key, err := c.Nodes[0].Store().SplitKey(dr)
		if err != nil {
			t.Fatal(err)
		}
		if string(key) == shareStart || string(key) == oshareStart {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("balancer split key %q is not a group's start", key)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// An admin split in the middle of the $share group's members.
	mid := groupKey("acme", []string{"$share", "g", "job"}, "m12")
	resp, err := c.Client(1).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "dist", Key: mid})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	if string(resp.Right.Start) != shareStart {
		t.Fatalf("split at %q, want the group's start %q", resp.Right.Start, shareStart)
	}
	// And one in the middle of the $oshare group, now in the left range.
	mid = groupKey("acme", []string{"$oshare", "o", "job"}, "o07")
	resp, err = c.Client(2).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "dist", Key: mid})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	if string(resp.Right.Start) != oshareStart {
		t.Fatalf("split at %q, want the group's start %q", resp.Right.Start, oshareStart)
	}
	// A split inside the group that now starts a range is refused.
	if _, err := c.Client(0).Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "dist", Key: groupKey("acme", []string{"$share", "g", "job"}, "m03")}); err == nil {
		t.Fatal("a split inside the group at a range's start was not refused")
	}

	oshareOf := map[string]string{}
	for i := 0; i < 60; i++ {
		pub := fmt.Sprintf("pub%d", i%5)
		res, err := dist.NewClient(c.Nodes[i%3].Router()).Match(ctx, &distpb.MatchRequest{Tenant: "acme", Topics: []string{"job"}, Publisher: pub, Seed: uint64(i)})
		if err != nil {
			t.Fatal(err)
		}
		var share, oshare []string
		for _, m := range res.Topics[0].Matched {
			switch m.Subscription {
			case "$share/g/job":
				share = append(share, m.Receiver.Id)
			case "$oshare/o/job":
				oshare = append(oshare, m.Receiver.Id)
			default:
				t.Fatalf("unexpected match %v", m)
			}
		}
		if len(share) != 1 || len(oshare) != 1 {
			t.Fatalf("message %d went to $share members %v and $oshare members %v, want one of each", i, share, oshare)
		}
		if prev, ok := oshareOf[pub]; ok && prev != oshare[0] {
			t.Fatalf("publisher %s went to $oshare member %s, then %s", pub, prev, oshare[0])
		}
		oshareOf[pub] = oshare[0]
	}
	sameOnEveryReplica(t, c, "acme", []string{"job", "a/x", "z/x"})
}
