package ranges

import (
	"errors"
	"fmt"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Errors callers branch on.
var (
	// ErrNoRange: no known range holds the key (the cluster is not
	// bootstrapped yet, or the routing table has not learned of it).
	ErrNoRange = errors.New("no range holds the key")
	// ErrUnavailable: no replica of the range answered in time.
	ErrUnavailable = errors.New("range unavailable")
	// ErrBadRequest: the request was refused as malformed or over a limit.
	ErrBadRequest = errors.New("bad request")
	// ErrUnknownStore: the store ID is not a member of the cluster.
	ErrUnknownStore = errors.New("unknown store")
	// ErrUnknownRange: no range has that ID.
	ErrUnknownRange = errors.New("unknown range")
)

// EpochNotMatchError reports that a command was routed with a stale
// descriptor; Current is the range's descriptor at the store that refused it.
type EpochNotMatchError struct {
	Current *kvpb.RangeDescriptor
	Message string
}

func (e *EpochNotMatchError) Error() string {
	return fmt.Sprintf("epoch not match: %s", e.Message)
}

// RefusedError is a command the range refused for a reason the caller must
// handle (a replica change in progress, say); retrying does not help.
type RefusedError struct {
	Status  kvpb.Status
	Message string
}

func (e *RefusedError) Error() string { return e.Message }
