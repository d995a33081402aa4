package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
)

// WillPublisher publishes the will of a session whose connection was lost.
type WillPublisher interface {
	PublishWill(ctx context.Context, tenant, inbox string, will *inboxpb.Will) error
}

// Scheduler runs, on every storage node, the time-driven work of the inbox
// ranges this node leads: it publishes due wills and expires sessions. Only
// the leader acts, and it claims a will through Raft before it publishes
// it, so a will is published at most once, even across leader changes; a
// leader that dies between the claim and the publication loses it.
type Scheduler struct {
	node     *ranges.Node
	client   *Client
	pub      WillPublisher
	interval time.Duration
	routes   RouteRemover
	owners   OwnerChecker
	ownerInt time.Duration
	// lastOwnerCheck is when Tick last checked owners.
	lastOwnerCheck time.Time
	log            *slog.Logger
	wills          prometheus.Counter
	willsLost      prometheus.Counter
	expiries       prometheus.Counter
}

// SchedulerConfig configures a Scheduler.
type SchedulerConfig struct {
	// Interval between ticks; default 500ms.
	Interval   time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Routes, if set, has the dist routes of an expired session removed
	// (its subscriptions, receiver ReceiverID(inbox, incarnation)); a route
	// left behind is removed by the first insert that finds no inbox.
	Routes RouteRemover
	// Owners, if set, tells which owners (connections) of attached sessions
	// are gone with their frontend; those sessions are detached as if their
	// connection had been lost (their expiry starts, their will is
	// scheduled). Checked every OwnerCheckInterval (default 10s).
	Owners             OwnerChecker
	OwnerCheckInterval time.Duration
}

// OwnerChecker finds, among inbox owners, those that no longer exist.
type OwnerChecker interface {
	DeadOwners(ctx context.Context, owners []string) []string
}

// RouteRemover removes dist routes; *dist.Client is one.
type RouteRemover interface {
	RemoveRoute(ctx context.Context, req *distpb.RemoveRouteRequest) (*distpb.Output, error)
}

// NewScheduler returns a scheduler for a node's inbox ranges.
func NewScheduler(cfg SchedulerConfig, node *ranges.Node, pub WillPublisher) *Scheduler {
	if cfg.Interval == 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OwnerCheckInterval == 0 {
		cfg.OwnerCheckInterval = 10 * time.Second
	}
	s := &Scheduler{
		node: node, client: NewClient(node.Router()), pub: pub, interval: cfg.Interval, routes: cfg.Routes, owners: cfg.Owners, ownerInt: cfg.OwnerCheckInterval, log: cfg.Logger,
		wills: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_inbox_wills_published_total", Help: "Wills published by this node's inbox leaders.",
		}),
		willsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_inbox_wills_lost_total", Help: "Wills claimed for publication that could not be published within 30 s (at most once: not tried again).",
		}),
		expiries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_inbox_sessions_expired_total", Help: "Persistent sessions expired by this node's inbox leaders.",
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.wills, s.willsLost, s.expiries)
	}
	return s
}

// Run ticks until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := s.Tick(ctx, now); err != nil && ctx.Err() == nil {
				s.log.Warn("inbox scheduler tick", "err", err)
			}
		}
	}
}

// Tick does the work due at now on every inbox range this node leads.
func (s *Scheduler) Tick(ctx context.Context, now time.Time) error {
	var errs []error
	owners := s.owners != nil && now.Sub(s.lastOwnerCheck) >= s.ownerInt
	if owners {
		s.lastOwnerCheck = now
	}
	for _, r := range s.node.Store().Replicas() {
		d := r.Descriptor
		if d == nil || d.Keyspace != keyspace || !s.node.Store().IsLeader(r.RangeID) {
			continue
		}
		errs = append(errs, s.tickRange(ctx, d, now, owners))
	}
	return errors.Join(errs...)
}

func (s *Scheduler) tickRange(ctx context.Context, d *kvpb.RangeDescriptor, now time.Time, owners bool) error {
	in, err := proto.Marshal(&inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Due{Due: &inboxpb.DueRequest{NowUnixMs: now.UnixMilli(), Max: 256, Attached: owners}}})
	if err != nil {
		return err
	}
	// The leader's own state: every due item is re-checked when its
	// proposal applies.
	q := &kvpb.Query{Ver: d.Ver, Ops: []*kvpb.Op{{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: d.Start, Input: in}}}}}
	res, err := s.node.Store().Read(ctx, d.Id, q, true)
	if err != nil {
		return err
	}
	if res.Status != kvpb.Status_STATUS_OK {
		return nil // the range changed under us; next tick
	}
	resp := &inboxpb.QueryResponse{}
	if err := proto.Unmarshal(res.Results[0].Value, resp); err != nil {
		return err
	}
	if err := s.detachOrphans(ctx, resp.Due.GetAttached(), now); err != nil {
		return err
	}
	for _, m := range resp.Due.GetWills() {
		// Claimed first, through Raft (the will leaves the inbox), then
		// published: a leader change between the two cannot make another
		// leader publish it again, and a will cancelled by a reconnect
		// since this leader's read is not claimed.
		o, err := s.client.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_WillSent{WillSent: &inboxpb.WillSentRequest{
			Tenant: m.Tenant, Inbox: m.Inbox, Incarnation: m.Incarnation, NowUnixMs: now.UnixMilli()}}})
		if err != nil {
			return err
		}
		if o.Result != inboxpb.Result_RESULT_OK {
			continue
		}
		s.publishClaimed(ctx, m)
	}
	for _, m := range resp.Due.GetExpired() {
		o, err := s.client.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Expire{Expire: &inboxpb.ExpireRequest{
			Tenant: m.Tenant, Inbox: m.Inbox, Incarnation: m.Incarnation, NowUnixMs: now.UnixMilli()}}})
		if err != nil {
			return err
		}
		if o.Result == inboxpb.Result_RESULT_OK {
			s.expiries.Inc()
			s.removeRoutes(ctx, m)
		}
	}
	return nil
}

// publishClaimed publishes a will the scheduler claimed, trying again
// while the publication fails (its subscribers' inboxes unavailable) for
// up to willRetryFor: the claim took it out of the inbox, so this is its
// one publication (at most once).
func (s *Scheduler) publishClaimed(ctx context.Context, m *inboxpb.Meta) {
	deadline := time.Now().Add(willRetryFor)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		err := s.pub.PublishWill(ctx, m.Tenant, m.Inbox, m.Will)
		if err == nil {
			s.wills.Inc()
			return
		}
		if time.Now().Add(wait).After(deadline) || ctx.Err() != nil {
			s.willsLost.Inc()
			s.log.Error("a claimed will could not be published; it is lost", "tenant", m.Tenant, "inbox", m.Inbox, "err", err)
			return
		}
		s.log.Warn("publish will; trying again", "tenant", m.Tenant, "inbox", m.Inbox, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// willRetryFor bounds how long a claimed will's publication is tried.
const willRetryFor = 30 * time.Second

// detachOrphans detaches the attached sessions whose owner is gone: their
// frontend died (or restarted) without detaching them.
func (s *Scheduler) detachOrphans(ctx context.Context, attached []*inboxpb.Meta, now time.Time) error {
	if len(attached) == 0 {
		return nil
	}
	var owners []string
	for _, m := range attached {
		owners = append(owners, m.Owner)
	}
	dead := map[string]bool{}
	for _, o := range s.owners.DeadOwners(ctx, owners) {
		dead[o] = true
	}
	for _, m := range attached {
		if !dead[m.Owner] {
			continue
		}
		o, err := s.client.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Detach{Detach: &inboxpb.DetachRequest{
			Tenant: m.Tenant, Inbox: m.Inbox, Incarnation: m.Incarnation, Owner: m.Owner, NowUnixMs: now.UnixMilli(),
			SendWill: true, Orphaned: true}}})
		if err != nil {
			return err
		}
		if o.Result == inboxpb.Result_RESULT_OK {
			s.log.Info("detached a session whose connection's frontend is gone", "tenant", m.Tenant, "inbox", m.Inbox, "owner", m.Owner)
			if o.Meta == nil {
				s.removeRoutes(ctx, m) // it ended with its connection
			}
		}
	}
	return nil
}

// removeRoutes removes the dist routes of an expired session.
func (s *Scheduler) removeRoutes(ctx context.Context, m *inboxpb.Meta) {
	if s.routes == nil {
		return
	}
	id := ReceiverID(m.Inbox, m.Incarnation)
	for filter := range m.Subscriptions {
		if _, err := s.routes.RemoveRoute(ctx, &distpb.RemoveRouteRequest{Route: &distpb.Route{Tenant: m.Tenant,
			Subscription: filter, Receiver: &distpb.Receiver{Kind: ReceiverInbox, Id: id}}}); err != nil {
			s.log.Warn("removing an expired session's route", "tenant", m.Tenant, "inbox", m.Inbox,
				"filter", fmt.Sprintf("%.128s", filter), "filter_bytes", len(filter), "err", err)
		}
	}
}

// RoutePublisher publishes a will like any message: retained if flagged,
// then to every receiver dist matches. Persistent receivers (kind
// ReceiverInbox) get it in their inbox; transient ones go to Transient.
type RoutePublisher struct {
	Dist   *dist.Client
	Inbox  *Client
	Retain *retain.Client
	// Transient delivers to frontends; nil drops transient receivers (no
	// frontend runs).
	Transient func(ctx context.Context, tenant string, m *distpb.Matched, msg *inboxpb.Message) error
}

// Receiver kinds of dist routes.
const (
	ReceiverFrontend = 1
	ReceiverInbox    = 2
)

// PublishWill implements WillPublisher.
func (p *RoutePublisher) PublishWill(ctx context.Context, tenant, inbox string, w *inboxpb.Will) error {
	if w == nil {
		return nil
	}
	if w.Retain {
		if _, err := p.Retain.Set(ctx, &retainpb.SetRequest{Tenant: tenant, Message: &retainpb.Message{
			Topic: w.Topic, Payload: w.Payload, Qos: w.Qos, Properties: w.Properties, PublishedUnixMs: time.Now().UnixMilli()}}); err != nil {
			return err
		}
	}
	matches, err := p.Dist.Match(ctx, &distpb.MatchRequest{Tenant: tenant, Topics: []string{w.Topic}, Publisher: inbox, Seed: uint64(time.Now().UnixNano())})
	if err != nil {
		return err
	}
	msg := &inboxpb.Message{Topic: w.Topic, Payload: w.Payload, Qos: w.Qos, Retain: w.Retain, Properties: w.Properties, Publisher: inbox}
	var items []*inboxpb.InsertItem
	var receivers []string
	for _, m := range matches.Topics[0].Matched {
		switch m.Receiver.Kind {
		case ReceiverInbox:
			mm := proto.CloneOf(msg)
			mm.Subscription = m.Subscription
			ib, inc := ParseReceiverID(m.Receiver.Id)
			items = append(items, &inboxpb.InsertItem{Tenant: tenant, Inbox: ib, Incarnation: inc, Message: mm})
			receivers = append(receivers, m.Receiver.Id)
		case ReceiverFrontend:
			if p.Transient != nil {
				if err := p.Transient(ctx, tenant, m, msg); err != nil {
					return err
				}
			}
		}
	}
	if len(items) == 0 {
		return nil
	}
	res, err := p.Inbox.Insert(ctx, items)
	if err != nil {
		return err
	}
	// A route to an inbox that no longer exists is stale: remove it, so
	// that dist stops matching it.
	for i, r := range res.Results {
		if r == inboxpb.InsertResult_INSERT_NO_INBOX {
			_, err := p.Dist.RemoveRoute(ctx, &distpb.RemoveRouteRequest{Route: &distpb.Route{Tenant: tenant,
				Subscription: items[i].Message.Subscription, Receiver: &distpb.Receiver{Kind: ReceiverInbox, Id: receivers[i]}}})
			if err != nil {
				return err
			}
		}
	}
	return nil
}
