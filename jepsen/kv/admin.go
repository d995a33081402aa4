package kv

import (
	"context"
	"fmt"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// splitAt splits the kv keyspace at each key, through the first store that
// answers, retrying each for a while (the first ranges may still be
// electing leaders).
func splitAt(ctx context.Context, c *cluster.Cluster, keys []string) error {
	for _, k := range keys {
		var last error
		for attempt := 0; attempt < 20; attempt++ {
			n := c.Stores()[attempt%len(c.Stores())]
			cl, err := ranges.Dial(n.GRPCAddr())
			if err != nil {
				return err
			}
			callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = cl.Admin.Split(callCtx, &rangespb.SplitRequest{Keyspace: "kv", Key: []byte(k)})
			cancel()
			cl.Close()
			if err == nil {
				last = nil
				break
			}
			last = ranges.FromStatus(err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(300 * time.Millisecond):
			}
		}
		if last != nil {
			return fmt.Errorf("split at %q: %w", k, last)
		}
	}
	return nil
}
