package mqtt

import (
	"context"
	"fmt"

	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
)

// probeTopic is what Probe asks the stores about; no client can subscribe
// to it ($-topics are the broker's).
const probeTopic = "$bifrost/ready"

// Probe reports whether the cluster serves what a CONNECT and a QoS 1
// PUBLISH need: a linearizable match in the dist ranges, a session lookup in
// the inbox ranges (when sessions persist) and a retained-message match, each
// answered by a range leader. The error names the first part that did not
// answer. A frontend opens its listeners only once it succeeds.
func (s *Server) Probe(ctx context.Context) error {
	if _, err := s.cfg.Dist.Match(ctx, &distpb.MatchRequest{Tenant: auth.DefaultTenant, Topics: []string{probeTopic}}); err != nil {
		return fmt.Errorf("the subscription (dist) ranges: %w", err)
	}
	if s.cfg.Inbox != nil {
		if _, err := s.cfg.Inbox.Query(ctx, &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Get{Get: &inboxpb.GetRequest{Tenant: auth.DefaultTenant, Inbox: probeTopic}}}); err != nil {
			return fmt.Errorf("the session (inbox) ranges: %w", err)
		}
	}
	if _, err := s.cfg.Retain.Match(ctx, &retainpb.MatchRequest{Tenant: auth.DefaultTenant, Filter: probeTopic, Limit: 1}); err != nil {
		return fmt.Errorf("the retained-message ranges: %w", err)
	}
	return nil
}
