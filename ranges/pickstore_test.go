package ranges

import (
	"testing"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// pickStore sends a keyed request or a linearizable read to the router's own
// store when it holds a replica (it spares the forward to the leader's
// store), and otherwise to the leader first, as every other request.
func TestPickStorePrefersLocalReplicaThenLeader(t *testing.T) {
	route := &Route{
		Desc: &kvpb.RangeDescriptor{Id: 1, Replicas: []*kvpb.Replica{
			{ReplicaId: 11, StoreId: 1}, {ReplicaId: 12, StoreId: 2}, {ReplicaId: 13, StoreId: 3},
		}},
		LeaderID: 12,
	}
	for _, tc := range []struct {
		name   string
		prefer uint64
		tried  []uint64
		want   uint64
	}{
		{"no preference: the leader", 0, nil, 2},
		{"local follower replica", 3, nil, 3},
		{"local replica is the leader", 2, nil, 2},
		{"no local replica: the leader", 9, nil, 2},
		{"local replica tried: the leader", 3, []uint64{3}, 2},
		{"local and leader tried: the next replica", 3, []uint64{3, 2}, 1},
		{"every replica tried: start over at the leader", 3, []uint64{1, 2, 3}, 2},
	} {
		tried := map[uint64]bool{}
		for _, s := range tc.tried {
			tried[s] = true
		}
		if got := pickStore(route, tried, tc.prefer); got != tc.want {
			t.Errorf("%s: store %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestOnlyLinearizableQueriesPreferTheLocalReplica(t *testing.T) {
	query := &rangespb.ExecuteRequest_Query{Query: &kvpb.Query{}}
	if !isLinearizableRead(&rangespb.ExecuteRequest{Request: query}) {
		t.Error("a query without stale is linearizable")
	}
	if isLinearizableRead(&rangespb.ExecuteRequest{Request: query, Stale: true}) {
		t.Error("a stale query is not")
	}
	if isLinearizableRead(&rangespb.ExecuteRequest{Request: &rangespb.ExecuteRequest_Command{Command: &kvpb.Command{}}}) {
		t.Error("a command is not a read")
	}
}
