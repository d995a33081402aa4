package ranges

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// Client is a gRPC client of one store's KV and Admin services. Errors come
// back as the package's sentinels (ErrNoRange, ErrUnknownRange,
// ErrBadRequest, ErrUnavailable, ErrUnknownStore), wrapped with the server's
// message, and refusals as *RefusedError (with the range's status) or
// *EpochNotMatchError (with the current descriptor).
type Client struct {
	conn  *grpc.ClientConn
	KV    rangespb.KVClient
	Admin rangespb.AdminClient
}

// Dial connects to a store's gRPC address in plaintext, as to a cluster
// without certificates.
func Dial(addr string) (*Client, error) { return DialTLS(addr, nil) }

// DialTLS connects to a store's gRPC address, with mutual TLS when creds is
// set (the store must be one of the cluster, and so must we).
func DialTLS(addr string, creds *clustertls.Credentials) (*Client, error) {
	conn, err := dialStore(addr, creds)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &Client{conn: conn, KV: rangespb.NewKVClient(conn), Admin: rangespb.NewAdminClient(conn)}, nil
}

// dialStore is every connection to a store's gRPC services: values up to
// the largest a range holds come back.
func dialStore(addr string, creds *clustertls.Credentials) (*grpc.ClientConn, error) {
	return clustertls.NewClient(creds, addr, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(kvstore.MaxValueSize+1<<20)))
}

// Conn returns the connection, for the other services a store serves.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// FromStatus turns a gRPC error into the package's errors.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var base error
	switch st.Code() {
	case codes.OutOfRange:
		base = ErrNoRange
	case codes.NotFound:
		base = ErrUnknownRange
		if strings.Contains(st.Message(), ErrUnknownStore.Error()) {
			base = ErrUnknownStore
		}
	case codes.InvalidArgument:
		base = ErrBadRequest
	case codes.FailedPrecondition:
		return refusedFromStatus(st)
	case codes.Unavailable, codes.DeadlineExceeded:
		base = ErrUnavailable
	default:
		return err
	}
	return fmt.Errorf("%w: %s", base, st.Message())
}

// refusedFromStatus rebuilds the typed refusal ToStatus put in the status's
// details: an *EpochNotMatchError for a stale version or a key outside the
// range, otherwise a *RefusedError with the range's own status. A status
// without the detail (an older server) is a refused conf change, as before.
func refusedFromStatus(st *status.Status) error {
	for _, d := range st.Details() {
		res, ok := d.(*kvpb.CommandResult)
		if !ok || res.Status == kvpb.Status_STATUS_OK {
			continue
		}
		switch res.Status {
		case kvpb.Status_STATUS_EPOCH_NOT_MATCH, kvpb.Status_STATUS_KEY_NOT_IN_RANGE:
			return &EpochNotMatchError{Current: res.Range, Message: res.Message}
		}
		return &RefusedError{Status: res.Status, Message: st.Message()}
	}
	return &RefusedError{Status: kvpb.Status_STATUS_CONF_CHANGE_REFUSED, Message: st.Message()}
}

// Get reads a key linearizably.
func (c *Client) Get(ctx context.Context, key []byte) (value []byte, found bool, err error) {
	r, err := c.KV.Get(ctx, &rangespb.GetRequest{Key: key})
	if err != nil {
		return nil, false, FromStatus(err)
	}
	return r.Value, r.Found, nil
}

// Put writes a key; the request ID makes the server's retries apply once.
func (c *Client) Put(ctx context.Context, key, value []byte) error {
	_, err := c.KV.Put(ctx, &rangespb.PutRequest{Key: key, Value: value, RequestId: NewRequestID()})
	return FromStatus(err)
}

// Delete removes a key.
func (c *Client) Delete(ctx context.Context, key []byte) error {
	_, err := c.KV.Delete(ctx, &rangespb.DeleteRequest{Key: key, RequestId: NewRequestID()})
	return FromStatus(err)
}

// CompareAndSwap writes newValue if the key holds expected (expected nil:
// if the key is absent). It reports whether it wrote and the value it found.
func (c *Client) CompareAndSwap(ctx context.Context, key, expected, newValue []byte) (ok bool, current []byte, err error) {
	r, err := c.KV.CompareAndSwap(ctx, &rangespb.CompareAndSwapRequest{
		Key: key, Expected: expected, ExpectAbsent: expected == nil, NewValue: newValue, RequestId: NewRequestID(),
	})
	if err != nil {
		return false, nil, FromStatus(err)
	}
	return r.Succeeded, r.Current, nil
}
