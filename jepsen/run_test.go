package jepsen

import (
	"sync"
	"testing"

	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// TestObserverEvents: events a client observes (an MQTT delivery) become
// operations completed at once, even when recorded from many goroutines,
// and leave the history well formed.
func TestObserverEvents(t *testing.T) {
	rec := history.NewRecorder(nil)
	record := observer(rec, observerProcess+3, "f1")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				record(history.Op{F: "receive", Key: "t/1"})
			}
		}()
	}
	wg.Wait()
	pairs, err := rec.Ops().Pairs()
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 400 {
		t.Fatalf("%d operations, want 400", len(pairs))
	}
	for _, p := range pairs {
		if p.Completion.Type != history.OK || p.Invoke.Time != p.Completion.Time || p.Invoke.Node != "f1" || p.Invoke.Process != observerProcess+3 {
			t.Fatalf("observed operation %+v", p)
		}
	}
}

// TestAvailability: the rate of ok operations before the first fault
// decides; final operations do not count.
func TestAvailability(t *testing.T) {
	cfg := Config{MinOKRate: 5}
	var pairs []history.Pair
	for i := int64(0); i < 20; i++ {
		pairs = append(pairs, history.Pair{
			Invoke:     history.Op{Process: 0, Time: i * 1e8},
			Completion: history.Op{Process: 0, Type: history.OK, Time: i*1e8 + 1},
		})
	}
	pairs = append(pairs, history.Pair{
		Invoke:     history.Op{Process: finalProcess, Time: 9e9},
		Completion: history.Op{Process: finalProcess, Type: history.OK, Time: 9e9 + 1},
	})
	// 20 ok operations in the 2 s before a fault at 2 s: 10/s.
	if r := availability(cfg, pairs, []history.Fault{{Start: 2e9, End: 3e9}}, 0); r.Valid != Valid {
		t.Fatalf("10/s before the fault: %s (%s)", r.Valid, r.Summary)
	}
	// The same 20 before a fault at 8 s: 2.5/s.
	if r := availability(cfg, pairs, []history.Fault{{Start: 8e9, End: 9e9}}, 0); r.Valid != Invalid {
		t.Fatalf("2.5/s before the fault: %s (%s)", r.Valid, r.Summary)
	}
}
