package kv

import (
	"errors"
	"fmt"
	"testing"

	"github.com/bifrost-mq/bifrost/jepsen/history"
	"github.com/bifrost-mq/bifrost/ranges"
)

// TestWriteFailure: a write is fail only when it certainly did not apply.
// A routed worker's router retries, so its last attempt's "could not
// connect" says nothing of the earlier ones: the full suite once recorded
// such a write as fail while an earlier attempt had applied it, and the set
// checker called the element unexpected.
func TestWriteFailure(t *testing.T) {
	dial := fmt.Errorf("%w: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp 10.77.9.2:7948: connect: connection refused\"", ranges.ErrUnavailable)
	bad := fmt.Errorf("%w: key must not be empty", ranges.ErrBadRequest)
	timeout := fmt.Errorf("%w: context deadline exceeded", ranges.ErrUnavailable)
	store, routed := &client{}, &client{routed: &routedAPI{}}
	for _, tc := range []struct {
		name string
		c    *client
		err  error
		want history.Type
	}{
		{"store, could not connect", store, dial, history.Fail},
		{"store, malformed", store, bad, history.Fail},
		{"store, timeout", store, timeout, history.Info},
		{"routed, could not connect on the last attempt", routed, dial, history.Info},
		{"routed, malformed", routed, bad, history.Fail},
		{"routed, other", routed, errors.New("boom"), history.Info},
	} {
		got := tc.c.writeFailure(history.Op{F: FAdd, Key: "k"}, tc.err)
		if got.Type != tc.want || got.Error != tc.err.Error() {
			t.Errorf("%s: %s %q, want %s", tc.name, got.Type, got.Error, tc.want)
		}
	}
}
