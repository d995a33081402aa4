package ranges

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// benchTable returns a table of n adjacent kv ranges, [k%08d of i, of i+1),
// each reported by store 1, and their descriptors.
func benchTable(n int) (*Table, []*kvpb.RangeDescriptor) {
	t := NewTable()
	descs := make([]*kvpb.RangeDescriptor, n)
	for i := range descs {
		d := &kvpb.RangeDescriptor{Id: uint64(i + 1), Keyspace: kvpb.Keyspace_KEYSPACE_KV, Ver: 1, ConfVer: 1,
			Replicas: []*kvpb.Replica{{ReplicaId: 1, StoreId: 1}}}
		if i > 0 {
			d.Start = fmt.Appendf(nil, "k%08d", i*10)
		}
		if i < n-1 {
			d.End = fmt.Appendf(nil, "k%08d", (i+1)*10)
		}
		descs[i] = d
		t.Update(&rangespb.RangeInfo{Range: d, StoreId: 1, LeaderReplicaId: 1, LeaderTerm: 1, ApproximateBytes: 1})
	}
	return t, descs
}

// BenchmarkTableUpdate applies one changed descriptor to a table of many
// ranges, as gossip and the router do: a range's new version (its replicas
// changed), and a split (the shrunk parent and the new child).
func BenchmarkTableUpdate(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("newer/ranges=%d", n), func(b *testing.B) {
			t, descs := benchTable(n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				nd := proto.CloneOf(descs[(i*7919)%n])
				nd.ConfVer++
				descs[(i*7919)%n] = nd
				t.Update(&rangespb.RangeInfo{Range: nd, StoreId: 1, LeaderReplicaId: 1, LeaderTerm: 1})
			}
		})
		b.Run(fmt.Sprintf("split/ranges=%d", n), func(b *testing.B) {
			t, descs := benchTable(n)
			next := uint64(n + 1)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j := (i * 7919) % len(descs)
				d := descs[j]
				key := append(append([]byte(nil), d.Start...), byte('a'+i%26), byte(i/26))
				if len(d.End) > 0 && string(key) >= string(d.End) {
					continue
				}
				parent, child := proto.CloneOf(d), proto.CloneOf(d)
				parent.End, parent.Ver = key, d.Ver+1
				child.Id, child.Start, child.Ver = next, key, d.Ver+1
				next++
				descs[j] = parent
				descs = append(descs, child)
				t.Update(&rangespb.RangeInfo{Range: parent, StoreId: 1})
				t.Update(&rangespb.RangeInfo{Range: child, StoreId: 1})
			}
		})
	}
}
