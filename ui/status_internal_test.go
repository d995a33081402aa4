package ui

import (
	"reflect"
	"testing"
	"time"
)

// TestStatusCountsStores: replicas and leaders are counted per store, a
// store that ranges name but gossip does not list is a member "missing", and
// its ranges count as degraded in their keyspace.
func TestStatusCountsStores(t *testing.T) {
	snap := &Snapshot{Node: "store-1",
		Members: []Member{
			{Name: "store-1", Role: "store", StoreID: 1, Health: "alive"},
			{Name: "store-2", Role: "store", StoreID: 2, Health: "alive"},
			{Name: "fe", Role: "frontend", MQTT: true, Health: "alive"},
		},
		Ranges: []Range{
			{ID: 1, Keyspace: "kv", Replicas: []StoreID{1, 2, 3}, Leader: 1, Size: 100, SizeKnown: true},
			{ID: 5, Keyspace: "kv", Replicas: []StoreID{1, 2}, Leader: 2, Size: 10, SizeKnown: true},
			{ID: 2, Keyspace: "dist", Replicas: []StoreID{2, 3}},
		},
	}
	s := status(snap, newRates(), time.Now())
	want := []Member{
		{Name: "fe", Role: "frontend", MQTT: true, Health: "alive"},
		{Name: "store 3", Role: "store", StoreID: 3, Health: "missing", Replicas: 2, Bytes: 100},
		{Name: "store-1", Role: "store", StoreID: 1, Health: "alive", Replicas: 2, Leaders: 1, Bytes: 110},
		{Name: "store-2", Role: "store", StoreID: 2, Health: "alive", Replicas: 3, Leaders: 1, Bytes: 110},
	}
	if !reflect.DeepEqual(s.Members, want) {
		t.Fatalf("members:\n%+v\nwant\n%+v", s.Members, want)
	}
	wantKs := []Keyspace{{Name: "kv", Ranges: 2, Bytes: 110, Degraded: 1}, {Name: "dist", Ranges: 1, Leaderless: 1, Degraded: 1}}
	if !reflect.DeepEqual(s.Keyspaces, wantKs) {
		t.Fatalf("keyspaces %+v, want %+v", s.Keyspaces, wantKs)
	}
}

// TestRates: a rate is over the two latest samples at least rateGap apart;
// a counter that went down (a restarted frontend) starts over.
func TestRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := newRates()
	steps := []struct {
		at      time.Duration
		in, out uint64
		ok      bool
		inRate  float64
	}{
		{0, 100, 50, false, 0},
		{500 * time.Millisecond, 150, 50, false, 0}, // too close: not a sample
		{2 * time.Second, 300, 90, true, 100},       // (300-100)/2s
		{2500 * time.Millisecond, 400, 90, true, 100},
		{4 * time.Second, 600, 100, true, 150}, // (600-300)/2s
		{5 * time.Second, 10, 0, false, 0},     // restarted
		{7 * time.Second, 50, 4, true, 20},
	}
	for i, st := range steps {
		in, _, ok := r.observe("fe", t0.Add(st.at), st.in, st.out, t0.Add(st.at))
		if ok != st.ok || in != st.inRate {
			t.Fatalf("step %d: rate %v ok %v, want %v %v", i, in, ok, st.inRate, st.ok)
		}
	}
	r.forget(t0.Add(7*time.Second + rateMemory + time.Second))
	if len(r.byFE) != 0 {
		t.Fatalf("samples of a frontend gone for %v kept", rateMemory)
	}
}
