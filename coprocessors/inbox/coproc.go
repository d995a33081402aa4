// Package inbox is the persistent-session coprocessor. Each inbox (one
// session of one client of one tenant) has its metadata (incarnation,
// expiry, will, subscriptions, limits, queue pointers) and two queues, QoS 0
// and QoS 1/2, of bounded length with a drop policy whose drops are counted.
//
// Every key of an inbox starts with tenant 0x00 inbox 0x00, so an inbox is a
// unit that a split never cuts (SplitKey). Expiry and wills run on the range
// leader (Scheduler), so a will survives the loss of the frontend, and is
// fired once, not once per replica.
package inbox

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/kvstore"
)

// DefaultMaxQueue is a queue's length when the inbox's limits name none.
const DefaultMaxQueue = 10000

// DedupeWindow is how long an inbox remembers the dedupe of a message it
// took (InsertItem.dedupe), counted from the message's RelKey stamp: longer
// than a frontend keeps trying to route one message (its insert timeout,
// 30 s by default), with room for clocks that differ.
const DedupeWindow = 10 * time.Minute

// DedupeLen is the length of InsertItem.dedupe: a big-endian ms stamp and a
// 16-byte hash.
const DedupeLen = 24

// dedupeSweepEvery bounds how often an inbox's expired dedupe records are
// swept (by the stamps of the inserts, so that replicas agree).
const dedupeSweepEvery = time.Minute

const (
	kindDedupe byte = 'd'
	kindMeta   byte = 'm'
	kindQueue  byte = 'q'
	queueQoS0  byte = 0
	queue12    byte = 1
)

// Prefix is the key prefix of every key of one inbox.
func Prefix(tenant, inbox string) []byte {
	b := make([]byte, 0, len(tenant)+len(inbox)+2)
	b = append(b, tenant...)
	b = append(b, 0)
	b = append(b, inbox...)
	return append(b, 0)
}

// SplitKey is where a range may be split so that the inbox starting there is
// whole on one side: the inbox's prefix.
func SplitKey(tenant, inbox string) []byte { return Prefix(tenant, inbox) }

func metaKey(tenant, inbox string) []byte { return append(Prefix(tenant, inbox), kindMeta) }

// dedupeKey is the record of a message an inbox took; dedupe starts with
// its stamp, so that the expired records of an inbox are a prefix span.
func dedupeKey(tenant, inbox string, dedupe []byte) []byte {
	return append(append(Prefix(tenant, inbox), kindDedupe), dedupe...)
}

func msgKey(tenant, inbox string, inc uint64, q byte, seq uint64) []byte {
	b := append(Prefix(tenant, inbox), kindQueue)
	b = binary.BigEndian.AppendUint64(b, inc)
	b = append(b, q)
	return binary.BigEndian.AppendUint64(b, seq)
}

// isMetaKey says whether k is an inbox's metadata key: tenant 0x00 inbox
// 0x00 'm'. Tenants and inboxes hold no NUL (validID), so the first two NULs
// of any inbox key end them; a queue key has 'q' and binary numbers after
// the second (which may end in 0x00 'm' too: seq 109).
func isMetaKey(k []byte) bool {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return false
	}
	j := bytes.IndexByte(k[i+1:], 0)
	if j < 0 {
		return false
	}
	rest := k[i+1+j+1:]
	return len(rest) == 1 && rest[0] == kindMeta
}

func validID(s string) bool { return s != "" && !strings.ContainsRune(s, 0) && len(s) <= 1024 }

// Coprocessor is the inbox coprocessor of one range replica. Besides the
// data it keeps, in memory, the sessions that are detached or have a will
// scheduled, for the leader's scheduler to find due work.
type Coprocessor struct {
	mu      sync.Mutex
	pending map[string]*inboxpb.Meta // by prefix
	// attached are the sessions a connection owns, for the scheduler to
	// detach those whose frontend is gone.
	attached map[string]*inboxpb.Meta
}

// New makes the inbox coprocessor of one replica; a kvstore.CoprocessorFactory.
func New(rangeID uint64) kvstore.Coprocessor {
	return &Coprocessor{pending: map[string]*inboxpb.Meta{}, attached: map[string]*inboxpb.Meta{}}
}

func (c *Coprocessor) track(m *inboxpb.Meta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	trackIn(c.pending, c.attached, m)
}

// trackIn records in pending whether a session waits for its expiry or
// will, and in attached whether a connection owns it.
func trackIn(pending, attached map[string]*inboxpb.Meta, m *inboxpb.Meta) {
	k := string(Prefix(m.Tenant, m.Inbox))
	if m.DetachedUnixMs != 0 || m.WillDueUnixMs != 0 {
		pending[k] = proto.CloneOf(m)
	} else {
		delete(pending, k)
	}
	if m.DetachedUnixMs == 0 && m.Owner != "" {
		attached[k] = &inboxpb.Meta{Tenant: m.Tenant, Inbox: m.Inbox, Incarnation: m.Incarnation, Owner: m.Owner,
			Subscriptions: m.Subscriptions} // the map is never changed in place: a mutation decodes a fresh Meta
	} else {
		delete(attached, k)
	}
}

func (c *Coprocessor) untrack(tenant, inbox string) {
	c.mu.Lock()
	delete(c.pending, string(Prefix(tenant, inbox)))
	delete(c.attached, string(Prefix(tenant, inbox)))
	c.mu.Unlock()
}

func out(r inboxpb.Result, reason string) *inboxpb.Output {
	return &inboxpb.Output{Result: r, Reason: reason}
}

// Mutate applies one input.
func (c *Coprocessor) Mutate(tx kvstore.Tx, input []byte) ([]byte, error) {
	in := &inboxpb.Input{}
	var o *inboxpb.Output
	var err error
	if proto.Unmarshal(input, in) != nil {
		o = out(inboxpb.Result_RESULT_INVALID, "undecodable input")
	} else {
		o, err = c.mutate(tx, in)
		if err != nil {
			return nil, err
		}
	}
	return proto.Marshal(o)
}

func (c *Coprocessor) mutate(tx kvstore.Tx, in *inboxpb.Input) (*inboxpb.Output, error) {
	switch op := in.Op.(type) {
	case *inboxpb.Input_Attach:
		return c.attach(tx, op.Attach)
	case *inboxpb.Input_Detach:
		return c.detach(tx, op.Detach)
	case *inboxpb.Input_Subscribe:
		if op.Subscribe.DetachedOnly {
			if o, err := refuseAttached(tx, op.Subscribe.Tenant, op.Subscribe.Inbox); o != nil || err != nil {
				return o, err
			}
		}
		return c.withMeta(tx, op.Subscribe.Tenant, op.Subscribe.Inbox, op.Subscribe.Incarnation, func(m *inboxpb.Meta) error {
			if m.Subscriptions == nil {
				m.Subscriptions = map[string]*inboxpb.SubOptions{}
			}
			m.Subscriptions[op.Subscribe.Filter] = op.Subscribe.Options
			return nil
		})
	case *inboxpb.Input_Unsubscribe:
		if op.Unsubscribe.DetachedOnly {
			if o, err := refuseAttached(tx, op.Unsubscribe.Tenant, op.Unsubscribe.Inbox); o != nil || err != nil {
				return o, err
			}
		}
		return c.withMeta(tx, op.Unsubscribe.Tenant, op.Unsubscribe.Inbox, op.Unsubscribe.Incarnation, func(m *inboxpb.Meta) error {
			delete(m.Subscriptions, op.Unsubscribe.Filter)
			return nil
		})
	case *inboxpb.Input_Insert:
		return c.insert(tx, op.Insert)
	case *inboxpb.Input_Commit:
		return c.commit(tx, op.Commit)
	case *inboxpb.Input_Expire:
		return c.expire(tx, op.Expire)
	case *inboxpb.Input_WillSent:
		req := op.WillSent
		if now := req.NowUnixMs; now != 0 {
			m, found, err := getMeta(tx, req.Tenant, req.Inbox)
			if err != nil {
				return nil, err
			}
			if found && m.Incarnation == req.Incarnation && (m.Will == nil || m.WillDueUnixMs == 0 || m.WillDueUnixMs > now) {
				return out(inboxpb.Result_RESULT_CONFLICT, "no will due"), nil
			}
		}
		return c.withMeta(tx, req.Tenant, req.Inbox, req.Incarnation, func(m *inboxpb.Meta) error {
			m.Will, m.WillDueUnixMs = nil, 0
			return nil
		})
	}
	return out(inboxpb.Result_RESULT_INVALID, "empty input"), nil
}

func getMeta(r kvstore.Reader, tenant, inbox string) (*inboxpb.Meta, bool, error) {
	v, found, err := r.Get(metaKey(tenant, inbox))
	if err != nil || !found {
		return nil, false, err
	}
	m := &inboxpb.Meta{}
	if err := proto.Unmarshal(v, m); err != nil {
		return nil, false, fmt.Errorf("corrupt inbox meta %q/%q: %w", tenant, inbox, err)
	}
	return m, true, nil
}

func (c *Coprocessor) putMeta(tx kvstore.Tx, m *inboxpb.Meta) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	if err := tx.Set(metaKey(m.Tenant, m.Inbox), b); err != nil {
		return err
	}
	c.track(m)
	return nil
}

// drop deletes an inbox: its metadata, every queued message and its
// dedupe records.
func (c *Coprocessor) drop(tx kvstore.Tx, m *inboxpb.Meta) error {
	for _, kind := range []byte{kindQueue, kindDedupe} {
		if err := deleteSpan(tx, append(Prefix(m.Tenant, m.Inbox), kind), append(Prefix(m.Tenant, m.Inbox), kind+1)); err != nil {
			return err
		}
	}
	if err := tx.Delete(metaKey(m.Tenant, m.Inbox)); err != nil {
		return err
	}
	c.untrack(m.Tenant, m.Inbox)
	return nil
}

// deleteSpan deletes the keys in [lo, hi).
func deleteSpan(tx kvstore.Tx, lo, hi []byte) error {
	var keys [][]byte
	if err := tx.Iterate(lo, hi, func(k, _ []byte) bool {
		keys = append(keys, append([]byte(nil), k...))
		return true
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// sweepDedupe deletes m's dedupe records stamped more than DedupeWindow
// before now, at most once per dedupeSweepEvery.
func sweepDedupe(tx kvstore.Tx, m *inboxpb.Meta, now int64) error {
	if now-m.DedupeSweptUnixMs < dedupeSweepEvery.Milliseconds() {
		return nil
	}
	m.DedupeSweptUnixMs = now
	hi := binary.BigEndian.AppendUint64(append(Prefix(m.Tenant, m.Inbox), kindDedupe), uint64(max(now-DedupeWindow.Milliseconds(), 0)))
	return deleteSpan(tx, append(Prefix(m.Tenant, m.Inbox), kindDedupe), hi)
}

func expired(m *inboxpb.Meta, now int64) bool {
	return m.DetachedUnixMs != 0 && m.DetachedUnixMs+int64(m.ExpirySeconds)*1000 <= now
}

func (c *Coprocessor) attach(tx kvstore.Tx, req *inboxpb.AttachRequest) (*inboxpb.Output, error) {
	if !validID(req.Tenant) || !validID(req.Inbox) || !validID(req.Owner) {
		return out(inboxpb.Result_RESULT_INVALID, "tenant, inbox and owner must be non-empty and free of NUL"), nil
	}
	m, found, err := getMeta(tx, req.Tenant, req.Inbox)
	if err != nil {
		return nil, err
	}
	clean := req.CleanStart
	if found && m.User != req.User && !expired(m, req.NowUnixMs) {
		// A session belongs to the user who made it: another user neither
		// takes it over nor discards it, unless the frontend is configured
		// to replace a detached one with a fresh session.
		if !req.ReplaceForeign || m.DetachedUnixMs == 0 {
			return out(inboxpb.Result_RESULT_FORBIDDEN, "the session belongs to another user"), nil
		}
		clean = true
	}
	if found && m.WillDueUnixMs != 0 && m.WillDueUnixMs <= req.NowUnixMs {
		// The old connection's will is due and not yet published: the
		// scheduler publishes it within a tick; the client retries.
		return out(inboxpb.Result_RESULT_CONFLICT, "the previous connection's will is being published; retry"), nil
	}
	takenOverLive := found && m.DetachedUnixMs == 0 && m.Owner != "" && m.Owner != req.Owner
	if found && (m.WillDueUnixMs != 0 || (takenOverLive && m.Will.GetDelaySeconds() > 0)) && (clean || expired(m, req.NowUnixMs)) {
		// The session ends here, and with it the wait for its will
		// (MQTT-3.1.3-9: delay or session end, whichever first), be its
		// connection lost already or being taken over (a will without a
		// delay the frontend sends itself as the connection closes): the
		// will is due now; the client retries once the scheduler sent it.
		m.WillDueUnixMs = req.NowUnixMs
		if err := c.putMeta(tx, m); err != nil {
			return nil, err
		}
		return out(inboxpb.Result_RESULT_CONFLICT, "the previous session's will is being published; retry"), nil
	}
	var previous string
	if found && m.DetachedUnixMs == 0 && m.Owner != "" && m.Owner != req.Owner {
		// Taken over from a connection that has not detached: it may have
		// sent any queued message, and is told to close by the caller.
		previous = m.Owner
		m.DupBelow = m.Qos12.GetTail()
		m.Displaced = displace(m.Displaced, m.Owner)
	}
	if found && !clean && !m.Transient && !expired(m, req.NowUnixMs) {
		// Resume the session. A reconnect before the will delay passed
		// cancels the will (MQTT-3.1.3-9); the new connection's will replaces it.
		m.Owner, m.DetachedUnixMs = req.Owner, 0
		m.ExpirySeconds, m.Will, m.WillDueUnixMs = req.ExpirySeconds, req.Will, 0
		if req.Limits != nil {
			m.Limits = req.Limits
		}
		if err := c.putMeta(tx, m); err != nil {
			return nil, err
		}
		return &inboxpb.Output{Attach: &inboxpb.AttachResponse{SessionPresent: true, Meta: m, PreviousOwner: previous}}, nil
	}
	inc := uint64(1)
	var discarded *inboxpb.Meta
	if found {
		inc = m.Incarnation + 1
		if err := c.drop(tx, m); err != nil {
			return nil, err
		}
		discarded = m
	}
	n := &inboxpb.Meta{
		Tenant: req.Tenant, Inbox: req.Inbox, Incarnation: inc, Owner: req.Owner, ExpirySeconds: req.ExpirySeconds,
		Will: req.Will, Limits: req.Limits, Qos0: &inboxpb.Queue{}, Qos12: &inboxpb.Queue{}, CreatedUnixMs: req.NowUnixMs,
		Transient: req.Transient, User: req.User,
	}
	if found {
		n.Displaced = m.Displaced
	}
	if err := c.putMeta(tx, n); err != nil {
		return nil, err
	}
	return &inboxpb.Output{Attach: &inboxpb.AttachResponse{SessionPresent: false, Meta: n, PreviousOwner: previous, Discarded: discarded}}, nil
}

// maxDisplaced bounds Meta.displaced: a chain of takeovers whose answers
// were all lost longer than this is not followed further back.
const maxDisplaced = 4

// displace appends owner to the displaced owners, keeping the newest
// maxDisplaced.
func displace(d []string, owner string) []string {
	d = append(slices.DeleteFunc(d, func(o string) bool { return o == owner }), owner)
	if len(d) > maxDisplaced {
		d = d[len(d)-maxDisplaced:]
	}
	return d
}

func (c *Coprocessor) detach(tx kvstore.Tx, req *inboxpb.DetachRequest) (*inboxpb.Output, error) {
	m, found, err := getMeta(tx, req.Tenant, req.Inbox)
	if err != nil {
		return nil, err
	}
	if !found || m.Incarnation != req.Incarnation {
		return out(inboxpb.Result_RESULT_NO_INBOX, ""), nil
	}
	if req.Orphaned {
		if m.Owner != req.Owner || m.DetachedUnixMs != 0 {
			return out(inboxpb.Result_RESULT_CONFLICT, fmt.Sprintf("inbox is owned by %q", m.Owner)), nil
		}
		m.DupBelow = m.Qos12.GetTail()
	} else {
		if req.SentUpto > m.DupBelow {
			m.DupBelow = req.SentUpto
		}
		if m.Owner == req.Owner {
			// The owner's view of what it wrote (a rel_add whose answer
			// was lost is dropped: its message was not routed). A former
			// owner's view is stale: the new owner has written since.
			m.AwaitingRel = req.AwaitingRel
			m.RelKeys = slices.DeleteFunc(m.RelKeys, func(k *inboxpb.RelKey) bool { return !slices.Contains(m.AwaitingRel, k.PacketId) })
		}
	}
	if m.Owner != req.Owner {
		// A newer connection took the session over; this one's end changes
		// nothing but what it tells of the client's and its own in-flight
		// messages (the new owner waited for it to end before reading them).
		if err := c.putMeta(tx, m); err != nil {
			return nil, err
		}
		return out(inboxpb.Result_RESULT_CONFLICT, fmt.Sprintf("inbox is owned by %q", m.Owner)), nil
	}
	if req.ExpirySeconds != nil {
		m.ExpirySeconds = *req.ExpirySeconds
	}
	m.Owner, m.DetachedUnixMs = "", req.NowUnixMs
	if !req.Orphaned {
		// The owner had its attach's answer: it told the displaced to
		// close. An orphaned owner may not have: the next attach does.
		m.Displaced = nil
	}
	if req.SendWill && m.Will != nil {
		// The will waits for its delay or the session's end, whichever is first (MQTT-3.1.3-9).
		delay := min(m.Will.DelaySeconds, m.ExpirySeconds)
		m.WillDueUnixMs = req.NowUnixMs + int64(delay)*1000
	} else {
		m.Will, m.WillDueUnixMs = nil, 0 // a normal DISCONNECT discards the will (MQTT-3.1.2-10)
	}
	if m.ExpirySeconds == 0 && m.WillDueUnixMs == 0 {
		if err := c.drop(tx, m); err != nil {
			return nil, err
		}
		return out(inboxpb.Result_RESULT_OK, "session ended"), nil
	}
	if err := c.putMeta(tx, m); err != nil {
		return nil, err
	}
	return &inboxpb.Output{Meta: m}, nil
}

func (c *Coprocessor) withMeta(tx kvstore.Tx, tenant, inbox string, inc uint64, f func(*inboxpb.Meta) error) (*inboxpb.Output, error) {
	m, found, err := getMeta(tx, tenant, inbox)
	if err != nil {
		return nil, err
	}
	if !found || m.Incarnation != inc {
		return out(inboxpb.Result_RESULT_NO_INBOX, ""), nil
	}
	if err := f(m); err != nil {
		return nil, err
	}
	if err := c.putMeta(tx, m); err != nil {
		return nil, err
	}
	return &inboxpb.Output{Meta: m}, nil
}

// refuseAttached is RESULT_CONFLICT for a session a connection owns, nil
// for any other (withMeta answers for one that does not exist).
func refuseAttached(r kvstore.Reader, tenant, inbox string) (*inboxpb.Output, error) {
	m, found, err := getMeta(r, tenant, inbox)
	if err != nil || !found {
		return nil, err
	}
	if m.DetachedUnixMs == 0 && m.Owner != "" {
		return out(inboxpb.Result_RESULT_CONFLICT, "the session is connected"), nil
	}
	return nil, nil
}

func maxLen(l *inboxpb.Limits, qos0 bool) uint64 {
	v := l.GetMaxQos12()
	if qos0 {
		v = l.GetMaxQos0()
	}
	if v == 0 {
		return DefaultMaxQueue
	}
	return uint64(v)
}

func (c *Coprocessor) insert(tx kvstore.Tx, req *inboxpb.InsertRequest) (*inboxpb.Output, error) {
	for _, it := range req.Items {
		if len(it.Dedupe) != 0 && len(it.Dedupe) != DedupeLen {
			return out(inboxpb.Result_RESULT_INVALID, fmt.Sprintf("dedupe of %d bytes, want %d", len(it.Dedupe), DedupeLen)), nil
		}
	}
	resp := &inboxpb.InsertResponse{Results: make([]inboxpb.InsertResult, len(req.Items))}
	metas := map[string]*inboxpb.Meta{}
	for i, it := range req.Items {
		if !kvstore.ContainsKey(tx.Range(), Prefix(it.Tenant, it.Inbox)) {
			resp.Results[i] = inboxpb.InsertResult_INSERT_WRONG_RANGE
			continue
		}
		k := string(Prefix(it.Tenant, it.Inbox))
		m, ok := metas[k]
		if !ok {
			var found bool
			var err error
			if m, found, err = getMeta(tx, it.Tenant, it.Inbox); err != nil {
				return nil, err
			}
			if !found {
				m = nil
			}
			metas[k] = m
		}
		if m == nil || (it.Incarnation != 0 && it.Incarnation != m.Incarnation) || it.Message == nil {
			resp.Results[i] = inboxpb.InsertResult_INSERT_NO_INBOX
			continue
		}
		var dk []byte
		if len(it.Dedupe) == DedupeLen {
			dk = dedupeKey(it.Tenant, it.Inbox, it.Dedupe)
			_, found, err := tx.Get(dk)
			if err != nil {
				return nil, err
			}
			if found { // the Tx reads its own writes: this batch's too
				resp.Results[i] = inboxpb.InsertResult_INSERT_DUPLICATE
				continue
			}
		}
		if resp.Owners == nil {
			resp.Owners = make([]string, len(req.Items))
			resp.Seqs = make([]uint64, len(req.Items))
		}
		if m.DetachedUnixMs == 0 {
			resp.Owners[i] = m.Owner
		}
		qos0 := it.Message.Qos == 0
		q, qb := m.Qos12, queue12
		if qos0 {
			q, qb = m.Qos0, queueQoS0
		}
		if q.Tail-q.Head >= maxLen(m.Limits, qos0) {
			q.Dropped++
			if !m.Limits.GetDropOldest() {
				resp.Results[i] = inboxpb.InsertResult_INSERT_DROPPED
				continue
			}
			if err := tx.Delete(msgKey(m.Tenant, m.Inbox, m.Incarnation, qb, q.Head)); err != nil {
				return nil, err
			}
			q.Head++
		}
		b, err := proto.Marshal(it.Message)
		if err != nil {
			return nil, err
		}
		if err := tx.Set(msgKey(m.Tenant, m.Inbox, m.Incarnation, qb, q.Tail), b); err != nil {
			return nil, err
		}
		resp.Seqs[i] = q.Tail
		q.Tail++
		if dk != nil {
			if err := tx.Set(dk, nil); err != nil {
				return nil, err
			}
			if err := sweepDedupe(tx, m, int64(binary.BigEndian.Uint64(it.Dedupe))); err != nil {
				return nil, err
			}
		}
	}
	// Write each touched inbox's pointers once, in a fixed order.
	keys := make([]string, 0, len(metas))
	for k, m := range metas {
		if m != nil {
			keys = append(keys, k)
		}
	}
	sortStrings(keys)
	for _, k := range keys {
		if err := c.putMeta(tx, metas[k]); err != nil {
			return nil, err
		}
	}
	return &inboxpb.Output{Insert: resp}, nil
}

func (c *Coprocessor) commit(tx kvstore.Tx, req *inboxpb.CommitRequest) (*inboxpb.Output, error) {
	// The acknowledgements are applied whoever sends them (they are the
	// client's word, and a connection that lost its session flushes its
	// last ones while the new owner waits); a former owner is told it is
	// one by RESULT_CONFLICT.
	conflict := ""
	o, err := c.withMeta(tx, req.Tenant, req.Inbox, req.Incarnation, func(m *inboxpb.Meta) error {
		if req.Owner != "" && m.Owner != req.Owner {
			conflict = m.Owner
		} else if req.Owner != "" {
			// The owner had its attach's answer: it told the displaced to close.
			m.Displaced = nil
			for _, id := range req.RelRemove {
				m.AwaitingRel = slices.DeleteFunc(m.AwaitingRel, func(x uint32) bool { return x == id })
				m.RelKeys = slices.DeleteFunc(m.RelKeys, func(k *inboxpb.RelKey) bool { return k.PacketId == id })
			}
			for _, id := range req.RelAdd {
				if !slices.Contains(m.AwaitingRel, id) {
					m.AwaitingRel = append(m.AwaitingRel, id)
					m.RelSeq++
					m.RelKeys = append(m.RelKeys, &inboxpb.RelKey{PacketId: id, Seq: m.RelSeq, StampUnixMs: req.NowUnixMs})
				}
			}
			for _, id := range req.RelRouted {
				for _, k := range m.RelKeys {
					if k.PacketId == id {
						k.Routed = true
					}
				}
			}
		}
		done := map[uint64]bool{}
		for _, seq := range req.Qos12Done {
			if seq < m.Qos12.Head || seq >= m.Qos12.Tail || done[seq] {
				continue
			}
			done[seq] = true
			if err := tx.Delete(msgKey(m.Tenant, m.Inbox, m.Incarnation, queue12, seq)); err != nil {
				return err
			}
		}
		for _, seq := range req.Qos12Released {
			if seq >= m.Qos12.Head && seq < m.Qos12.Tail && !done[seq] && !slices.Contains(m.Released, seq) {
				m.Released = append(m.Released, seq)
			}
		}
		if len(done) > 0 {
			// The head moves to the first message still queued. Acks mostly
			// come in order: past the ones just done, the head is the
			// tail, or a message that is there (one point read); only
			// when it was acknowledged out of order before does it take
			// a scan.
			head := m.Qos12.Head
			for head < m.Qos12.Tail && done[head] {
				head++
			}
			if head < m.Qos12.Tail {
				_, found, err := tx.Get(msgKey(m.Tenant, m.Inbox, m.Incarnation, queue12, head))
				if err != nil {
					return err
				}
				if !found {
					next := m.Qos12.Tail
					lo := msgKey(m.Tenant, m.Inbox, m.Incarnation, queue12, head)
					hi := msgKey(m.Tenant, m.Inbox, m.Incarnation, queue12, m.Qos12.Tail)
					if err := tx.Iterate(lo, hi, func(k, _ []byte) bool {
						if seq := binary.BigEndian.Uint64(k[len(k)-8:]); !done[seq] {
							next = seq
							return false
						}
						return true
					}); err != nil {
						return err
					}
					head = next
				}
			}
			m.Qos12.Head = head
		}
		defer func() {
			m.Released = slices.DeleteFunc(m.Released, func(seq uint64) bool { return seq < m.Qos12.Head || done[seq] })
		}()
		for _, p := range []struct {
			q    *inboxpb.Queue
			b    byte
			upto uint64
		}{{m.Qos0, queueQoS0, req.Qos0Upto}, {m.Qos12, queue12, req.Qos12Upto}} {
			upto := min(p.upto, p.q.Tail)
			for seq := p.q.Head; seq < upto; seq++ {
				if err := tx.Delete(msgKey(m.Tenant, m.Inbox, m.Incarnation, p.b, seq)); err != nil {
					return err
				}
			}
			if upto > p.q.Head {
				p.q.Head = upto
			}
		}
		return nil
	})
	if err == nil && conflict != "" {
		o.Result, o.Reason = inboxpb.Result_RESULT_CONFLICT, fmt.Sprintf("inbox is owned by %q", conflict)
	}
	return o, err
}

func (c *Coprocessor) expire(tx kvstore.Tx, req *inboxpb.ExpireRequest) (*inboxpb.Output, error) {
	m, found, err := getMeta(tx, req.Tenant, req.Inbox)
	if err != nil {
		return nil, err
	}
	if !found || m.Incarnation != req.Incarnation {
		return out(inboxpb.Result_RESULT_NO_INBOX, ""), nil
	}
	if !expired(m, req.NowUnixMs) || m.WillDueUnixMs != 0 {
		return out(inboxpb.Result_RESULT_NOT_DUE, ""), nil
	}
	if err := c.drop(tx, m); err != nil {
		return nil, err
	}
	return out(inboxpb.Result_RESULT_OK, "expired"), nil
}

// Query serves fetch, get and the scheduler's due list.
func (c *Coprocessor) Query(r kvstore.Reader, input []byte) ([]byte, error) {
	req := &inboxpb.QueryRequest{}
	if err := proto.Unmarshal(input, req); err != nil {
		return nil, fmt.Errorf("undecodable inbox query: %w", err)
	}
	resp := &inboxpb.QueryResponse{}
	switch op := req.Op.(type) {
	case *inboxpb.QueryRequest_Fetch:
		f, err := fetch(r, op.Fetch)
		if err != nil {
			return nil, err
		}
		resp.Fetch = f
	case *inboxpb.QueryRequest_Get:
		m, found, err := getMeta(r, op.Get.Tenant, op.Get.Inbox)
		if err != nil {
			return nil, err
		}
		if !found {
			resp.Result = inboxpb.Result_RESULT_NO_INBOX
		}
		resp.Meta = m
	case *inboxpb.QueryRequest_Due:
		resp.Due = c.due(op.Due)
	case *inboxpb.QueryRequest_List:
		l, err := list(r, op.List)
		if err != nil {
			return nil, err
		}
		resp.List = l
	default:
		return nil, errors.New("empty inbox query")
	}
	return proto.Marshal(resp)
}

func fetch(r kvstore.Reader, req *inboxpb.FetchRequest) (*inboxpb.FetchResponse, error) {
	m, found, err := getMeta(r, req.Tenant, req.Inbox)
	if err != nil {
		return nil, err
	}
	if !found || m.Incarnation != req.Incarnation {
		return &inboxpb.FetchResponse{Result: inboxpb.Result_RESULT_NO_INBOX}, nil
	}
	max := int(req.Max)
	if max <= 0 || max > 1000 {
		max = 1000
	}
	resp := &inboxpb.FetchResponse{Qos0Dropped: m.Qos0.GetDropped(), Qos12Dropped: m.Qos12.GetDropped(), Owner: m.Owner}
	// bytes counts the stored size of what is returned, against max_bytes.
	var bytes uint64
	for _, p := range []struct {
		q    *inboxpb.Queue
		b    byte
		from uint64
		out  *[]*inboxpb.QueuedMessage
	}{{m.Qos0, queueQoS0, req.Qos0From, &resp.Qos0}, {m.Qos12, queue12, req.Qos12From, &resp.Qos12}} {
		from := max64(p.from, p.q.GetHead())
		if from >= p.q.GetTail() || (req.MaxBytes > 0 && bytes >= req.MaxBytes) {
			continue
		}
		lo := msgKey(m.Tenant, m.Inbox, m.Incarnation, p.b, from)
		hi := msgKey(m.Tenant, m.Inbox, m.Incarnation, p.b, p.q.GetTail())
		var bad error
		err := r.Iterate(lo, hi, func(k, v []byte) bool {
			msg := &inboxpb.Message{}
			if err := proto.Unmarshal(v, msg); err != nil {
				bad = err
				return false
			}
			*p.out = append(*p.out, &inboxpb.QueuedMessage{Seq: binary.BigEndian.Uint64(k[len(k)-8:]), Message: msg})
			bytes += uint64(len(v))
			return len(*p.out) < max && (req.MaxBytes == 0 || bytes < req.MaxBytes)
		})
		if err != nil {
			return nil, err
		}
		if bad != nil {
			return nil, bad
		}
	}
	return resp, nil
}

// list pages through the range's sessions of a tenant. It reads one key
// per inbox: after an inbox's first key it seeks past the inbox's prefix
// (tenant 0x00 inbox 0x01 sorts after every key of the inbox and before
// the next inbox's), so queued messages cost nothing.
func list(r kvstore.Reader, req *inboxpb.ListRequest) (*inboxpb.ListResponse, error) {
	max := int(req.Max)
	if max <= 0 || max > 1000 {
		max = 1000
	}
	tenant := append([]byte(req.Tenant), 0)
	from := append(slices.Clone(tenant), req.Prefix...)
	if req.After != "" {
		if after := append(append(slices.Clone(tenant), req.After...), 1); bytes.Compare(after, from) > 0 {
			from = after
		}
	}
	end := append(slices.Clone(tenant[:len(tenant)-1]), 1) // past the tenant
	resp := &inboxpb.ListResponse{}
	for {
		var first []byte
		if err := r.Iterate(from, end, func(k, _ []byte) bool {
			first = slices.Clone(k)
			return false
		}); err != nil {
			return nil, err
		}
		if first == nil {
			return resp, nil
		}
		rest := first[len(tenant):]
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return nil, fmt.Errorf("inbox key %q has no inbox ID", first)
		}
		id := string(rest[:i])
		if !strings.HasPrefix(id, req.Prefix) {
			return resp, nil // past the prefix's inboxes
		}
		m, found, err := getMeta(r, req.Tenant, id)
		if err != nil {
			return nil, err
		}
		if found && !m.Transient {
			if len(resp.Sessions) == max {
				resp.More = true // a next page that is not empty
				return resp, nil
			}
			resp.Sessions = append(resp.Sessions, m)
		}
		from = append(append(slices.Clone(tenant), id...), 1)
	}
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func (c *Coprocessor) due(req *inboxpb.DueRequest) *inboxpb.DueResponse {
	max := int(req.Max)
	if max <= 0 {
		max = 1000
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &inboxpb.DueResponse{}
	if req.Attached {
		for _, m := range c.attached {
			resp.Attached = append(resp.Attached, proto.CloneOf(m))
		}
	}
	for _, m := range c.pending {
		if len(resp.Wills)+len(resp.Expired) >= max {
			break
		}
		switch {
		case m.WillDueUnixMs != 0 && m.WillDueUnixMs <= req.NowUnixMs:
			resp.Wills = append(resp.Wills, proto.CloneOf(m))
		case m.WillDueUnixMs == 0 && expired(m, req.NowUnixMs):
			resp.Expired = append(resp.Expired, proto.CloneOf(m))
		}
	}
	return resp
}

// Reset rebuilds the list of detached sessions from the range's metadata.
// It builds the new list aside and swaps it in whole, so that the scheduler
// asking meanwhile misses no session that was due before and after.
func (c *Coprocessor) Reset(r kvstore.Reader) error {
	fresh, attached := map[string]*inboxpb.Meta{}, map[string]*inboxpb.Meta{}
	var bad error
	err := r.Iterate(nil, nil, func(k, v []byte) bool {
		if !isMetaKey(k) {
			return true
		}
		m := &inboxpb.Meta{}
		if err := proto.Unmarshal(v, m); err != nil {
			bad = fmt.Errorf("corrupt inbox meta at %q: %w", k, err)
			return false
		}
		if string(metaKey(m.Tenant, m.Inbox)) != string(k) {
			bad = fmt.Errorf("inbox meta at %q names another inbox (%q, %q)", k, m.Tenant, m.Inbox)
			return false
		}
		trackIn(fresh, attached, m)
		return true
	})
	if err != nil {
		return err
	}
	if bad != nil {
		return bad
	}
	c.mu.Lock()
	c.pending, c.attached = fresh, attached
	c.mu.Unlock()
	return nil
}

// AlignSplitKey moves a split key to the start of the inbox that holds it, so
// that an inbox's metadata and queues stay in one range.
func (c *Coprocessor) AlignSplitKey(key []byte) []byte {
	tenant, rest, ok := strings.Cut(string(key), "\x00")
	if !ok {
		return key
	}
	ib, _, ok := strings.Cut(rest, "\x00")
	if !ok {
		return key
	}
	return Prefix(tenant, ib)
}
