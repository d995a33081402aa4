package mqtt

import (
	"context"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/mqtt/bugzoo"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
)

// The hooks of the bug zoo's faults (mqtt/bugzoo): each is the real code
// path unless the binary is built with the fault's tag, and the compiler
// drops the fault's branch from a normal build.

// insertInboxes is deliverInboxes, whose commit the publisher's
// acknowledgement waits for. With bugzoo.AckBeforeInsert the publisher is
// acknowledged at once and the insert goes in the background after a
// batching window (a group commit that acknowledges before the group
// commits), its failure ignored: a frontend that dies in the window loses
// what it acknowledged.
func (s *Server) insertInboxes(ctx context.Context, tenant string, m *mqttpb.Message, routes []*distpb.Matched, done func(int, error)) {
	if !bugzoo.AckBeforeInsert {
		s.deliverInboxes(ctx, tenant, m, routes, done)
		return
	}
	done(len(routes), nil)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		s.deliverInboxes(s.ctx, tenant, m, routes, func(int, error) {})
	}()
}

// commitPast returns the acknowledgements to commit once the client is done
// with seq (already appended to done); with bugzoo.CommitPastUnacked the
// next message of the queue is committed too, acknowledged or not.
func commitPast(done []uint64, seq uint64) []uint64 {
	if !bugzoo.CommitPastUnacked {
		return done
	}
	return append(done, seq+1)
}

// kickAddr is the gRPC address of the frontend fe (a receiver ID), to which
// a takeover sends its Kick; with bugzoo.SkipRemoteKick there is none, and
// the older connection on another frontend is not told to close.
func kickAddr(fe string) (string, bool) {
	if bugzoo.SkipRemoteKick {
		return "", false
	}
	return receiverAddr(fe)
}

// skipClaims: with bugzoo.SkipRemoteKick a CONNECT does not claim its client
// ID on the other frontends either, so nothing closes an older connection
// there.
func skipClaims() bool { return bugzoo.SkipRemoteKick }
