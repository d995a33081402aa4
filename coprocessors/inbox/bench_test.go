package inbox_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// BenchmarkInbox measures insert and fetch throughput on one 3-replica inbox
// range: 16 writers inserting batches of 32 messages into 256 inboxes, and
// fetches of 100 messages.
//
//	go test -run '^$' -bench Inbox -benchtime 3s ./coprocessors/inbox/
func BenchmarkInbox(b *testing.B) {
	c := rangestest.Start(b, 3, rangestest.Options{RTTMillisecond: 50, Coprocessors: map[kvpb.Keyspace]kvstore.CoprocessorFactory{
		kvpb.Keyspace_KEYSPACE_INBOX: inbox.New,
	}})
	ctx := context.Background()
	cl := inbox.NewClient(c.Nodes[0].Router())
	const inboxes = 256
	for i := 0; i < inboxes; i++ {
		if _, err := cl.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{
			Tenant: "t", Inbox: fmt.Sprint(i), Owner: "o", ExpirySeconds: 3600, Limits: &inboxpb.Limits{MaxQos12: 1 << 30, DropOldest: true}}}}); err != nil {
			b.Fatal(err)
		}
	}
	payload := make([]byte, 256)
	b.Run("insert", func(b *testing.B) {
		var n atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for n.Add(1) <= int64(b.N) {
					var items []*inboxpb.InsertItem
					for j := 0; j < 32; j++ {
						items = append(items, &inboxpb.InsertItem{Tenant: "t", Inbox: fmt.Sprint((w*32 + j) % inboxes), Message: &inboxpb.Message{Topic: "x", Payload: payload, Qos: 1}})
					}
					if _, err := cl.Insert(ctx, items); err != nil {
						b.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		b.ReportMetric(float64(b.N*32)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("fetch", func(b *testing.B) {
		// Every inbox fetched holds at least 100 messages, whatever the
		// insert run's length left.
		for j := 0; j < 32; j++ {
			var items []*inboxpb.InsertItem
			for k := 0; k < 100; k++ {
				items = append(items, &inboxpb.InsertItem{Tenant: "t", Inbox: fmt.Sprint(j), Message: &inboxpb.Message{Topic: "x", Payload: payload, Qos: 1}})
			}
			if _, err := cl.Insert(ctx, items); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			r, err := cl.Query(ctx, &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Fetch{Fetch: &inboxpb.FetchRequest{
				Tenant: "t", Inbox: fmt.Sprint(i % 32), Incarnation: 1, Max: 100}}})
			if err != nil || len(r.Fetch.Qos12) == 0 {
				b.Fatalf("fetch: %v", err)
			}
		}
		b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "msgs/s")
	})
}
