package ranges

import (
	"bytes"
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// modelTable is the table's rule written the plain way, over every route:
// a stale descriptor is ignored; a newer one is refused if another range it
// overlaps is at its version or newer, and otherwise replaces every route
// it overlaps.
type modelTable struct{ routes []*kvpb.RangeDescriptor }

func (m *modelTable) update(d *kvpb.RangeDescriptor) {
	for _, r := range m.routes {
		if r.Id == d.Id && newer(r, d) {
			return
		}
	}
	for _, r := range m.routes {
		if r.Keyspace == d.Keyspace && overlaps(r, d) && r.Id != d.Id && r.Ver >= d.Ver {
			return
		}
	}
	m.routes = slices.DeleteFunc(m.routes, func(r *kvpb.RangeDescriptor) bool {
		return r.Id == d.Id || (r.Keyspace == d.Keyspace && overlaps(r, d))
	})
	m.routes = append(m.routes, d)
}

// TestTableUpdateMatchesModel: the table, which visits only the
// neighbourhood of an update, keeps exactly the routes the rule applied to
// every route keeps, over random splits, merges, version bumps and stale
// reports in two keyspaces.
func TestTableUpdateMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	key := func() []byte { return []byte{byte('a' + rng.Intn(20))} }
	for round := 0; round < 200; round++ {
		tbl, model := NewTable(), &modelTable{}
		for step := 0; step < 60; step++ {
			id := uint64(1 + rng.Intn(12))
			// A range's keyspace never changes.
			d := &kvpb.RangeDescriptor{Id: id, Keyspace: kvpb.Keyspace(1 + id%2), Ver: uint64(1 + rng.Intn(8)), ConfVer: uint64(rng.Intn(3))}
			switch rng.Intn(4) {
			case 0: // from the keyspace's start
				d.End = key()
			case 1: // to its end
				d.Start = key()
			default:
				a, b := key(), key()
				if bytes.Equal(a, b) {
					continue
				}
				if bytes.Compare(a, b) > 0 {
					a, b = b, a
				}
				d.Start, d.End = a, b
			}
			tbl.Update(&rangespb.RangeInfo{Range: d, StoreId: 1})
			model.update(d)
			got := tbl.All()
			want := slices.Clone(model.routes)
			slices.SortFunc(want, func(a, b *kvpb.RangeDescriptor) int {
				if a.Keyspace != b.Keyspace {
					return int(a.Keyspace) - int(b.Keyspace)
				}
				return bytes.Compare(a.Start, b.Start)
			})
			if fmt.Sprint(descsOf(got)) != fmt.Sprint(descStrings(want)) {
				t.Fatalf("round %d step %d after %v:\n table %v\n model %v", round, step, descString(d), descsOf(got), descStrings(want))
			}
			for _, w := range want {
				if r := tbl.Get(w.Id); r == nil || descString(r.Desc) != descString(w) {
					t.Fatalf("round %d step %d: Get(%d) does not return the route of %v", round, step, w.Id, descString(w))
				}
			}
		}
	}
}

func descString(d *kvpb.RangeDescriptor) string {
	return fmt.Sprintf("%d:%d[%s,%s)v%d.%d", d.Id, d.Keyspace, d.Start, d.End, d.Ver, d.ConfVer)
}

func descStrings(ds []*kvpb.RangeDescriptor) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = descString(d)
	}
	return out
}

func descsOf(rs []*Route) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = descString(r.Desc)
	}
	return out
}
