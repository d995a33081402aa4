package ranges_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestNoRangeError: a key outside every known range is ErrNoRange, from a
// single write and a batch, and through the gRPC boundary.
func TestNoRangeError(t *testing.T) {
	r := ranges.NewRouter(ranges.RouterConfig{Timeout: 300 * time.Millisecond}, ranges.NewTable(), nil, nil)
	_, err := r.Write(context.Background(), ksKV, []byte("k"), nil, &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: []byte("k")}}})
	if !errors.Is(err, ranges.ErrNoRange) {
		t.Fatalf("write: %v, want ErrNoRange", err)
	}
	if got := ranges.FromStatus(ranges.ToStatus(err)); !errors.Is(got, ranges.ErrNoRange) {
		t.Errorf("through gRPC: %v, want ErrNoRange", got)
	}
	_, err = r.WriteBatch(context.Background(), ksKV, []ranges.KeyedOp{{Op: casOp("k", "", "v")}})
	if !errors.Is(err, ranges.ErrNoRange) {
		t.Errorf("batch: %v, want ErrNoRange", err)
	}
}

// TestRefusalsSurviveGRPC: a refusal keeps its status, and a stale version
// its current descriptor, through ToStatus and FromStatus.
func TestRefusalsSurviveGRPC(t *testing.T) {
	cur := &kvpb.RangeDescriptor{Id: 7, Ver: 3, Start: []byte("m")}
	err := ranges.FromStatus(ranges.ToStatus(fmt.Errorf("split: %w", &ranges.EpochNotMatchError{Current: cur, Message: "stale"})))
	var epoch *ranges.EpochNotMatchError
	if !errors.As(err, &epoch) || epoch.Current.GetId() != 7 || epoch.Current.GetVer() != 3 {
		t.Errorf("stale version: %#v, want an EpochNotMatchError with range 7 ver 3", err)
	}
	for _, st := range []kvpb.Status{kvpb.Status_STATUS_SPLIT_MERGE_REFUSED, kvpb.Status_STATUS_CONF_CHANGE_REFUSED} {
		err := ranges.FromStatus(ranges.ToStatus(&ranges.RefusedError{Status: st, Message: "no"}))
		var refused *ranges.RefusedError
		if !errors.As(err, &refused) || refused.Status != st || refused.Message != "no" {
			t.Errorf("refused %s: %#v", st, err)
		}
	}
	// A status without the detail (an older server) is still a refusal.
	var refused *ranges.RefusedError
	if err := ranges.FromStatus(status.Error(codes.FailedPrecondition, "old")); !errors.As(err, &refused) || refused.Status != kvpb.Status_STATUS_CONF_CHANGE_REFUSED {
		t.Errorf("old server: %#v", err)
	}
}

// TestRefusedSplitStatusOverGRPC: a split of a frozen range is refused over
// a real connection as SPLIT_MERGE_REFUSED, not as a refused conf change.
func TestRefusedSplitStatusOverGRPC(t *testing.T) {
	c := rangestest.Start(t, 1, rangestest.Options{
		MergeResolveAfter: time.Minute,
		Failpoint: func(s string) error {
			if s == ranges.FailAfterFreeze {
				return errors.New("injected crash at " + s)
			}
			return nil
		}})
	resp := split(t, c, 0, "m")
	if _, err := c.Client(0).Admin.Merge(ctxT(t, 30*time.Second), &rangespb.MergeRequest{RangeId: resp.Left.Id}); err == nil {
		t.Fatal("the failpoint did not fire")
	}
	_, err := c.Client(0).Admin.Split(ctxT(t, 30*time.Second), &rangespb.SplitRequest{RangeId: resp.Right.Id, Key: []byte("t")})
	var refused *ranges.RefusedError
	if err = ranges.FromStatus(err); !errors.As(err, &refused) || refused.Status != kvpb.Status_STATUS_SPLIT_MERGE_REFUSED {
		t.Fatalf("split of a frozen range: %#v, want a RefusedError with SPLIT_MERGE_REFUSED", err)
	}
}

// TestRequestIDBounded (issue 15): a client's request ID is part of the key
// of the dedupe record its write leaves; one over ranges.MaxRequestIDLen is
// refused (InvalidArgument) before it is proposed. A 1 MiB ID made a 1 MiB
// key.
func TestRequestIDBounded(t *testing.T) {
	c := rangestest.Start(t, 1, rangestest.Options{})
	cl := c.Client(0)
	ctx := ctxT(t, 10*time.Second)
	long, max := make([]byte, ranges.MaxRequestIDLen+1), make([]byte, ranges.MaxRequestIDLen)
	_, err := cl.KV.Put(ctx, &rangespb.PutRequest{Key: []byte("rid"), Value: []byte("v"), RequestId: long})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("put with a %d-byte request ID: %v, want InvalidArgument", len(long), err)
	}
	_, err = cl.KV.Delete(ctx, &rangespb.DeleteRequest{Key: []byte("rid"), RequestId: long})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("delete with a %d-byte request ID: %v, want InvalidArgument", len(long), err)
	}
	_, err = cl.KV.CompareAndSwap(ctx, &rangespb.CompareAndSwapRequest{Key: []byte("rid"), ExpectAbsent: true, NewValue: []byte("v"), RequestId: long})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("cas with a %d-byte request ID: %v, want InvalidArgument", len(long), err)
	}
	if _, err := cl.KV.Put(ctx, &rangespb.PutRequest{Key: []byte("rid"), Value: []byte("v"), RequestId: max}); err != nil {
		t.Errorf("put with a %d-byte request ID: %v", len(max), err)
	}
}

// TestScanOfLargeValuesPages: a scan of large values comes back in pages
// under the gRPC message limit, across ranges too. Before, a scan returned
// up to 1,000 pairs whatever their size: twelve values of 1 MiB (more than
// the 9 MiB limit) failed with ResourceExhausted, and every retry with it.
func TestScanOfLargeValuesPages(t *testing.T) {
	c := rangestest.Start(t, 1, rangestest.Options{})
	cl := c.Client(0)
	value := make([]byte, 1<<20)
	for i := range 12 {
		if err := cl.Put(ctxT(t, 10*time.Second), fmt.Appendf(nil, "big%02d", i), value); err != nil {
			t.Fatal(err)
		}
	}
	split(t, c, 0, "big03") // the next range's page is bounded by what is left
	var got []string
	start := []byte("big")
	for pages := 0; ; pages++ {
		if pages > 12 {
			t.Fatalf("more than 12 pages for 12 pairs: %v", got)
		}
		resp, err := cl.KV.Scan(ctxT(t, 10*time.Second), &rangespb.ScanRequest{Start: start, End: []byte("bih")})
		if err != nil {
			t.Fatalf("scan from %q after %v: %v", start, got, err)
		}
		size := 0
		for _, p := range resp.Pairs {
			got = append(got, string(p.Key))
			size += len(p.Key) + len(p.Value)
		}
		if size > 5<<20 {
			t.Errorf("a page of %d bytes", size)
		}
		if !resp.More {
			break
		}
		start = resp.NextKey
	}
	if len(got) != 12 || got[0] != "big00" || got[11] != "big11" {
		t.Fatalf("scanned %v, want big00 to big11", got)
	}
}
