package mqtt

import (
	"context"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
)

// The retained messages of a new subscription (MQTT-3.3.1-9: every one
// that matches, not the first thousand) are fetched a page at a time
// (Config.RetainPageSize, retain's paged match) and sent as the client's
// flow control makes room: a QoS 1 or 2 message once the in-flight window
// has a free slot and no other message waits for one, a QoS 0 message once
// what waits for the socket is under replyBacklog. So a client with a small
// Receive Maximum, or one that reads slowly, costs one page and its window,
// however many messages match; and none is dropped for a full queue, as
// they were when all were handed over at once.
//
// The first page of a SUBSCRIBE's matches is fetched by the reader right
// after the SUBACK, and what the client has room for is queued before the
// reader reads its next packet, as when all were sent at once: a client
// (the jepsen mqtt-retained reader) that sends PINGREQ after the SUBACK has
// the retained messages before the PINGRESP, and the match is a read
// between its SUBSCRIBE and that PINGRESP. The rest (no room, more pages)
// goes to one goroutine per connection, which feeds while there is
// something to feed: the subscriptions of all SUBSCRIBE packets, in order.
// The reader never waits for room (it reads the acknowledgements that make
// it).

// retainedReq is one subscription whose retained messages are to be sent.
type retainedReq struct {
	filter string
	qos    byte
	subID  uint32
	// stopped: unsubscribed before its messages were all sent (guarded
	// by the connection's mu).
	stopped bool
	// pending is what of the fetched page is still to send (empty: fetch
	// the next), from where the next page starts (empty after a page: none).
	pending []*retainpb.Message
	from    []byte
}

// sendRetainedNow runs on the reader after a SUBACK: each subscription's
// first page is fetched and sent as far as the client has room, in order;
// from the first that is not done, the subscriptions go to the feed.
func (c *conn) sendRetainedNow(reqs []*retainedReq) {
	for i, r := range reqs {
		c.mu.Lock()
		busy := c.feed.running || len(c.feed.reqs) > 0
		c.mu.Unlock()
		if busy {
			c.feedRetained(reqs[i:]) // behind what the feed still sends
			return
		}
		if err := c.fetchRetainedPage(c.s.ctx, r); err != nil {
			c.retainedMatchFailed(r, err)
			continue
		}
		c.mu.Lock()
		for len(r.pending) > 0 && c.tryDeliverLocked(r, r.pending[0]) {
			r.pending[0] = nil
			r.pending = r.pending[1:]
		}
		c.mu.Unlock()
		if len(r.pending) > 0 || len(r.from) > 0 {
			c.feedRetained(reqs[i:])
			return
		}
	}
}

// fetchRetainedPage fetches r's next page (its first while r.from is
// empty) into r.pending.
func (c *conn) fetchRetainedPage(ctx context.Context, r *retainedReq) error {
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.RequestTimeout)
	defer cancel()
	resp, err := c.s.cfg.Retain.Match(ctx, &retainpb.MatchRequest{Tenant: c.id.Tenant, Filter: r.filter, Limit: c.s.cfg.RetainPageSize, From: r.from})
	if err != nil {
		return err
	}
	r.pending, r.from = resp.Messages, resp.Next
	return nil
}

func (c *conn) retainedMatchFailed(r *retainedReq, err error) {
	c.drop(r.filter, "retained_match_error", 1)
	c.s.log.Warn("matching retained messages failed", "tenant", c.id.Tenant, "client", c.key.clientID, "filter", clipped(r.filter), "err", err)
}

// retainedFeed is a connection's retained messages still to be sent.
// Its fields are guarded by the connection's mu.
type retainedFeed struct {
	reqs    []*retainedReq
	running bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// feedRetained queues the retained messages of new subscriptions, after
// their SUBACK, and starts the feed if it is idle.
func (c *conn) feedRetained(reqs []*retainedReq) {
	if len(reqs) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f := &c.feed
	if f.closed || c.closed {
		return
	}
	f.reqs = append(f.reqs, reqs...)
	if f.running {
		return
	}
	f.running = true
	ctx, cancel := context.WithCancel(c.s.ctx)
	f.cancel = cancel
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer cancel()
		c.runFeed(ctx)
	}()
}

// stopRetained stops sending the retained messages of an unsubscribed
// filter.
func (c *conn) stopRetained(filter string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.feed.reqs {
		if r.filter == filter {
			r.stopped = true
		}
	}
}

// stopFeed ends the feed of a closing connection and waits for it.
func (c *conn) stopFeed() {
	c.mu.Lock()
	f := &c.feed
	f.closed = true
	cancel := f.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel() // a page being fetched
	}
	f.wg.Wait()
}

func (c *conn) runFeed(ctx context.Context) {
	for {
		c.mu.Lock()
		f := &c.feed
		if c.closed || f.closed || len(f.reqs) == 0 {
			f.running, f.reqs = false, nil
			c.mu.Unlock()
			return
		}
		r := f.reqs[0]
		c.mu.Unlock()
		c.sendRetained(ctx, r)
		c.mu.Lock()
		f.reqs[0] = nil
		f.reqs = f.reqs[1:]
		c.mu.Unlock()
	}
}

// sendRetained sends the retained messages of one subscription, page by
// page, each as the client makes room for it.
func (c *conn) sendRetained(ctx context.Context, r *retainedReq) {
	for {
		// A request the reader started comes with the rest of its first
		// page (sendRetainedNow); otherwise the page is fetched here.
		if len(r.pending) == 0 {
			if err := c.fetchRetainedPage(ctx, r); err != nil {
				if ctx.Err() == nil {
					c.retainedMatchFailed(r, err)
				}
				return
			}
		}
		for _, rm := range r.pending {
			if !c.deliverWhenRoom(ctx, r, rm) {
				return
			}
		}
		r.pending = nil
		if len(r.from) == 0 {
			return
		}
	}
}

// retainedMessage is a retained message as the connection sends it.
func retainedMessage(rm *retainpb.Message) *mqttpb.Message {
	m := &mqttpb.Message{}
	_ = proto.Unmarshal(rm.Properties, m)
	m.Topic, m.Payload, m.Qos, m.Retain, m.ExpiresUnixMs = rm.Topic, rm.Payload, rm.Qos, true, rm.ExpiresUnixMs // MQTT-3.3.1-9: RETAIN set
	return m
}

// tryDeliverLocked hands a retained message of r to the client if it has
// room for it now (c.mu held).
func (c *conn) tryDeliverLocked(r *retainedReq, rm *retainpb.Message) bool {
	qos := min(byte(rm.Qos), r.qos)
	// Within the byte budget too (budget.go): past it the message would be
	// dropped, and a retained message waits instead.
	if !c.roomLocked() || !((qos == 0 && len(c.out) <= replyBacklog) || (qos > 0 && len(c.inflight) < c.window && len(c.queue) == 0)) {
		return false
	}
	var ids []uint32
	if r.subID != 0 {
		ids = []uint32{r.subID}
	}
	c.deliverLocked(retainedMessage(rm), qos, true, ids)
	return true
}

// deliverWhenRoom waits until the client has room for a retained message
// of r, then hands it over; false when the connection closed or the
// subscription went.
func (c *conn) deliverWhenRoom(ctx context.Context, r *retainedReq, rm *retainpb.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closed || c.inflight == nil || r.stopped {
			return false
		}
		if c.tryDeliverLocked(r, rm) {
			return true
		}
		ch := c.roomChanLocked()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		c.mu.Lock()
		if ctx.Err() != nil {
			return false
		}
	}
}
