package mqtt

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
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
//
// Exactly once through inboxes across frontends: the packet ID is written
// *before* the message is routed, and the write gives it a key (RelKey:
// the session's rel_seq and a stamp) that the routing carries as the
// inserts' dedupe, so each inbox takes the message once. A connection
// that lost the session cannot write the ID (owner check), so it routes
// nothing; one whose write applied may still be routing while the client
// resends through another frontend: that frontend finds the ID with its
// key in the record it attached to and routes the resend again under the
// same key (redispatch), which the inboxes that took the first drop. A
// clean-session subscriber on a frontend (no inbox) can get a second copy
// in that window. Once routed, the key is marked so (before the PUBREC): a
// resend of a routed message is answered, not routed again. The messages
// of one session are routed in the order their IDs were written
// (routeInOrder).

// relChange is one pending change of the session's awaiting_rel: done is
// called once the inbox applied it (or with why it did not).
type relChange struct {
	id   uint16
	op   relOp
	done func(*inboxpb.RelKey, error)
}

// relOp is what a relChange does to its packet ID.
type relOp uint8

const (
	relAdd    relOp = iota + 1 // into awaiting_rel, with a new key
	relRouted                  // its message was routed: a resend is not routed again
	relRemove                  // out of awaiting_rel (PUBREL, or an error PUBREC)
)

// recordRel queues a change of the session's awaiting_rel and writes it
// when the one in flight is done; done, which must not block, gets the
// key an added ID got.
func (s *session) recordRel(id uint16, op relOp, done func(*inboxpb.RelKey, error)) {
	s.relMu.Lock()
	s.relQueue = append(s.relQueue, relChange{id: id, op: op, done: done})
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
	// The last change of an ID wins (one ID has one change in flight at
	// a time: each waits for the answer of the one before); the
	// coprocessor removes, then adds, then marks routed.
	last := map[uint16]relOp{}
	var order []uint16
	for _, ch := range batch {
		if _, seen := last[ch.id]; !seen {
			order = append(order, ch.id)
		}
		last[ch.id] = ch.op
	}
	req := &inboxpb.CommitRequest{Tenant: s.c.id.Tenant, Inbox: s.inbox, Incarnation: s.inc, Owner: s.owner,
		NowUnixMs: time.Now().UnixMilli()}
	for _, id := range order {
		switch last[id] {
		case relAdd:
			req.RelAdd = append(req.RelAdd, uint32(id))
		case relRouted:
			req.RelRouted = append(req.RelRouted, uint32(id))
		case relRemove:
			req.RelRemove = append(req.RelRemove, uint32(id))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.c.s.cfg.RequestTimeout)
	s.c.s.commits.add(ctx, []*inboxpb.CommitRequest{req}, func(res []commitResult, err error) {
		cancel()
		var o *inboxpb.Output
		if err == nil {
			if o, err = res[0].out, res[0].err; err == nil && o.Result != inboxpb.Result_RESULT_OK {
				err = fmt.Errorf("inbox: %s %s", o.Result, o.Reason)
			}
		}
		s.c.s.m.relWrites.WithLabelValues(resultLabel(err)).Inc()
		keys := map[uint16]*inboxpb.RelKey{}
		if err == nil {
			for _, k := range o.GetMeta().GetRelKeys() {
				keys[uint16(k.PacketId)] = k
			}
			s.relMu.Lock()
			for _, id := range order {
				if last[id] == relRemove {
					delete(s.relDurable, id)
				} else {
					s.relDurable[id] = keys[id]
				}
			}
			s.relMu.Unlock()
		}
		for _, ch := range batch {
			var k *inboxpb.RelKey
			cerr := err
			if err == nil && ch.op == relAdd {
				if k = keys[ch.id]; k == nil {
					cerr = fmt.Errorf("inbox: no key for QoS 2 packet ID %d", ch.id)
				}
			}
			ch.done(k, cerr)
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

// durableRel is the session's unreleased QoS 2 packet IDs as its inbox
// record has them (for the detach).
func (s *session) durableRel() []uint32 {
	s.relMu.Lock()
	defer s.relMu.Unlock()
	ids := make([]uint32, 0, len(s.relDurable))
	for id := range s.relDurable {
		ids = append(ids, uint32(id))
	}
	return ids
}

// takeRedispatch returns the key of a packet ID the session's record held
// with one, not marked routed, when this connection attached, once: the
// client's resend of its PUBLISH is routed again under that key.
func (s *session) takeRedispatch(id uint16) *inboxpb.RelKey {
	s.relMu.Lock()
	defer s.relMu.Unlock()
	k := s.redispatch[id]
	delete(s.redispatch, id)
	return k
}

// dedupeOf is the inserts' dedupe of the message that k names
// (inboxpb.InsertItem.dedupe): k's stamp, then a hash of the session and
// k's seq.
func (s *session) dedupeOf(k *inboxpb.RelKey) []byte {
	h := sha256.New()
	var b [16]byte
	h.Write([]byte(s.c.id.Tenant))
	h.Write([]byte{0})
	h.Write([]byte(s.inbox))
	h.Write([]byte{0})
	binary.BigEndian.PutUint64(b[:8], s.inc)
	binary.BigEndian.PutUint64(b[8:], k.Seq)
	h.Write(b[:])
	d := make([]byte, 0, inbox.DedupeLen)
	d = binary.BigEndian.AppendUint64(d, uint64(k.StampUnixMs))
	return h.Sum(d)[:inbox.DedupeLen]
}

// routeInOrder runs f after the functions queued before it, on a goroutine
// of the session's (f routes one message: it may block on a match).
func (s *session) routeInOrder(f func()) {
	s.relMu.Lock()
	s.routeQueue = append(s.routeQueue, f)
	if s.routing {
		s.relMu.Unlock()
		return
	}
	s.routing = true
	s.relMu.Unlock()
	s.c.s.wg.Add(1)
	go func() {
		defer s.c.s.wg.Done()
		for {
			s.relMu.Lock()
			if len(s.routeQueue) == 0 {
				s.routing = false
				s.relMu.Unlock()
				return
			}
			f := s.routeQueue[0]
			s.routeQueue[0] = nil
			s.routeQueue = s.routeQueue[1:]
			s.relMu.Unlock()
			f()
		}
	}()
}

func resultLabel(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
