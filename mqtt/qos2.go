package mqtt

import (
	"context"
	"fmt"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
)

// A persistent session's unreleased inbound QoS 2 packet IDs (MQTT-4.3.3,
// the receiver's side) are in its inbox record before the PUBREC that
// promises them and out of it before the PUBCOMP that ends them: a resent
// PUBLISH after the frontend died (or after a takeover, whose attach reads
// the record while the old connection still holds its IDs) is then
// recognised and not delivered a second time, and a packet ID the client
// reuses after a PUBCOMP is a new message, not a duplicate. The changes of
// one session are written one batch at a time, in order; while one write is
// in flight the next ones gather (a publisher that pipelines QoS 2 messages
// pays one Raft round per window, not per message), and they ride the
// frontend's inbox commit batcher with the other sessions' commits.

// relChange is one pending change of the session's awaiting_rel: done is
// called once the inbox applied it (or with why it did not).
type relChange struct {
	id   uint16
	add  bool
	done func(error)
}

// recordRel queues a change of the session's awaiting_rel and writes it
// when the one in flight is done; done must not block.
func (s *session) recordRel(id uint16, add bool, done func(error)) {
	s.relMu.Lock()
	s.relQueue = append(s.relQueue, relChange{id: id, add: add, done: done})
	if s.relIdle != nil {
		s.relMu.Unlock()
		return
	}
	s.relIdle = make(chan struct{})
	s.relMu.Unlock()
	s.writeRels()
}

// writeRels writes the queued changes as one commit, then the next batch,
// until none is left.
func (s *session) writeRels() {
	s.relMu.Lock()
	batch := s.relQueue
	s.relQueue = nil
	if len(batch) == 0 {
		close(s.relIdle)
		s.relIdle = nil
		s.relMu.Unlock()
		return
	}
	s.relMu.Unlock()
	// The last change of an ID wins; the coprocessor removes, then adds.
	last := map[uint16]bool{}
	var order []uint16
	for _, ch := range batch {
		if _, seen := last[ch.id]; !seen {
			order = append(order, ch.id)
		}
		last[ch.id] = ch.add
	}
	req := &inboxpb.CommitRequest{Tenant: s.c.id.Tenant, Inbox: s.inbox, Incarnation: s.inc, Owner: s.owner}
	for _, id := range order {
		if last[id] {
			req.RelAdd = append(req.RelAdd, uint32(id))
		} else {
			req.RelRemove = append(req.RelRemove, uint32(id))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.c.s.cfg.RequestTimeout)
	s.c.s.commits.add(ctx, []*inboxpb.CommitRequest{req}, func(res []commitResult, err error) {
		cancel()
		if err == nil {
			var o *inboxpb.Output
			if o, err = res[0].out, res[0].err; err == nil && o.Result != inboxpb.Result_RESULT_OK {
				err = fmt.Errorf("inbox: %s %s", o.Result, o.Reason)
			}
		}
		s.c.s.m.relWrites.WithLabelValues(resultLabel(err)).Inc()
		for _, ch := range batch {
			ch.done(err)
		}
		s.writeRels()
	})
}

// waitRels waits (up to timeout) until no change of awaiting_rel is queued
// or in flight, for a detach that writes the whole set after them.
func (s *session) waitRels(timeout time.Duration) {
	s.relMu.Lock()
	idle := s.relIdle
	s.relMu.Unlock()
	if idle == nil {
		return
	}
	select {
	case <-idle:
	case <-time.After(timeout):
	}
}

func resultLabel(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
