package api

import (
	"encoding/base64"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/bifrost-mq/bifrost/balancer/balancerpb"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// The handlers translate JSON to the broker's and the stores' calls and
// back; the work is theirs.

func (s *Server) message(r *http.Request) (*mqttpb.Message, error) {
	var m Message
	if err := decodeBody(r, &m); err != nil {
		return nil, err
	}
	if m.ExpiresUnixMs != 0 {
		return nil, badf("expires_unix_ms is read only: set message_expiry (seconds)")
	}
	out, err := m.toMQTT(time.Now())
	if err != nil {
		return nil, badf("%v", err)
	}
	return out, nil
}

func (s *Server) publish(r *http.Request, tenant string) (int, any, error) {
	m, err := s.message(r)
	if err != nil {
		return 0, nil, err
	}
	n, err := s.cfg.Broker.Publish(r.Context(), tenant, m)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, PublishResult{Subscribers: n}, nil
}

func (s *Server) setRetained(r *http.Request, tenant string) (int, any, error) {
	m, err := s.message(r)
	if err != nil {
		return 0, nil, err
	}
	if len(m.Payload) == 0 {
		return 0, nil, badf("an empty payload: clear the retained message with DELETE")
	}
	m.Retain = true
	if err := s.cfg.Broker.SetRetained(r.Context(), tenant, m); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, messageOf(m, false), nil
}

func (s *Server) clearRetained(r *http.Request, tenant string) (int, any, error) {
	topic := r.URL.Query().Get("topic")
	if topic == "" {
		return 0, nil, badf("parameter topic is required")
	}
	if err := s.cfg.Broker.SetRetained(r.Context(), tenant, &mqttpb.Message{Topic: topic, Retain: true}); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// getRetained answers ?topic=T with T's retained message (404 if none), and
// ?filter=F with a page of those F matches.
func (s *Server) getRetained(r *http.Request, tenant string) (int, any, error) {
	q := r.URL.Query()
	topic, filter := q.Get("topic"), q.Get("filter")
	if (topic == "") == (filter == "") {
		return 0, nil, badf("want one of the parameters topic or filter")
	}
	b64 := q.Get("encoding") == EncodingBase64
	if e := q.Get("encoding"); e != "" && e != EncodingBase64 && e != EncodingUTF8 {
		return 0, nil, badf("parameter encoding=%q: want utf8 or base64", e)
	}
	if topic != "" {
		if strings.ContainsAny(topic, "+#") {
			return 0, nil, badf("topic %q has wildcards: use filter", topic)
		}
		msgs, _, err := s.cfg.Broker.Retained(r.Context(), tenant, topic, nil, 1)
		if err != nil {
			return 0, nil, err
		}
		if len(msgs) == 0 || msgs[0].Topic != topic {
			return 0, nil, &notFound{"no retained message on topic " + topic}
		}
		return http.StatusOK, messageOf(msgs[0], b64), nil
	}
	limit, err := intParam(r, "limit", 100, 1, 1000)
	if err != nil {
		return 0, nil, err
	}
	from, err := base64.RawURLEncoding.DecodeString(q.Get("cursor"))
	if err != nil {
		return 0, nil, badf("parameter cursor is not a cursor this API gave")
	}
	msgs, next, err := s.cfg.Broker.Retained(r.Context(), tenant, filter, from, limit)
	if err != nil {
		return 0, nil, err
	}
	page := RetainedPage{Messages: []Message{}, NextCursor: base64.RawURLEncoding.EncodeToString(next)}
	for _, m := range msgs {
		page.Messages = append(page.Messages, messageOf(m, b64))
	}
	return http.StatusOK, page, nil
}

func (s *Server) listSessions(r *http.Request, tenant string) (int, any, error) {
	limit, err := intParam(r, "limit", 100, 1, 1000)
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	sessions, next, err := s.cfg.Broker.Sessions(r.Context(), tenant, q.Get("prefix"), q.Get("cursor"), limit)
	if err != nil {
		return 0, nil, err
	}
	page := SessionPage{Sessions: []Session{}, NextCursor: next}
	for _, info := range sessions {
		page.Sessions = append(page.Sessions, sessionOf(info))
	}
	return http.StatusOK, page, nil
}

func (s *Server) getSession(r *http.Request, tenant string) (int, any, error) {
	info, err := s.cfg.Broker.Session(r.Context(), tenant, r.PathValue("client_id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, sessionOf(info), nil
}

func (s *Server) kick(r *http.Request, tenant string) (int, any, error) {
	id := r.PathValue("client_id")
	found, err := s.cfg.Broker.Kick(r.Context(), tenant, id)
	if err != nil {
		return 0, nil, err
	}
	if !found {
		return 0, nil, &notFound{"client " + id + " is not connected"}
	}
	return http.StatusOK, KickResult{Kicked: true}, nil
}

func (s *Server) subscribe(r *http.Request, tenant string) (int, any, error) {
	var sub Subscription
	if err := decodeBody(r, &sub); err != nil {
		return 0, nil, err
	}
	if sub.Filter == "" {
		return 0, nil, badf("filter is required")
	}
	if err := s.cfg.Broker.Subscribe(r.Context(), tenant, r.PathValue("client_id"), sub.Filter, sub.options(), sub.RetainHandling); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, sub, nil
}

func (s *Server) unsubscribe(r *http.Request, tenant string) (int, any, error) {
	filter := r.URL.Query().Get("filter")
	if filter == "" {
		return 0, nil, badf("parameter filter is required")
	}
	id := r.PathValue("client_id")
	found, err := s.cfg.Broker.Unsubscribe(r.Context(), tenant, id, filter)
	if err != nil {
		return 0, nil, err
	}
	if !found {
		return 0, nil, &notFound{"session " + id + " has no subscription " + filter}
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) members(r *http.Request, _ string) (int, any, error) {
	c, err := s.store()
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Admin.Cluster(r.Context(), &rangespb.ClusterRequest{})
	if err != nil {
		return 0, nil, ranges.FromStatus(err)
	}
	out := []Member{}
	for _, m := range resp.Members {
		out = append(out, MemberOf(m))
	}
	return http.StatusOK, out, nil
}

func (s *Server) ranges(r *http.Request, _ string) (int, any, error) {
	c, err := s.store()
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Admin.Ranges(r.Context(), &rangespb.RangesRequest{})
	if err != nil {
		return 0, nil, ranges.FromStatus(err)
	}
	out := []Range{}
	for _, info := range resp.Ranges {
		out = append(out, RangeOf(info))
	}
	return http.StatusOK, out, nil
}

func (s *Server) split(r *http.Request, _ string) (int, any, error) {
	var req SplitRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Key == "" || (req.Range == 0) == (req.Keyspace == "") {
		return 0, nil, badf("want key and one of range or keyspace")
	}
	c, err := s.store()
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Admin.Split(r.Context(), &rangespb.SplitRequest{RangeId: req.Range, Keyspace: req.Keyspace, Key: []byte(req.Key)})
	if err != nil {
		return 0, nil, ranges.FromStatus(err)
	}
	return http.StatusOK, SplitResult{RangeOf(&rangespb.RangeInfo{Range: resp.Left}), RangeOf(&rangespb.RangeInfo{Range: resp.Right})}, nil
}

func (s *Server) merge(r *http.Request, _ string) (int, any, error) {
	var req MergeRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Range == 0 {
		return 0, nil, badf("range is required")
	}
	c, err := s.store()
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Admin.Merge(r.Context(), &rangespb.MergeRequest{RangeId: req.Range})
	if err != nil {
		return 0, nil, ranges.FromStatus(err)
	}
	return http.StatusOK, RangeOf(&rangespb.RangeInfo{Range: resp.Range}), nil
}

func (s *Server) balancerStatus(r *http.Request, _ string) (int, any, error) {
	c, err := s.store()
	if err != nil {
		return 0, nil, err
	}
	resp, err := balancerpb.NewBalancerClient(c.Conn()).Status(r.Context(), &balancerpb.StatusRequest{})
	if err != nil {
		return 0, nil, ranges.FromStatus(err)
	}
	return http.StatusOK, balancerStores(resp.Stores), nil
}

func (s *Server) balancerControl(pause bool) handler {
	return func(r *http.Request, _ string) (int, any, error) {
		c, err := s.store()
		if err != nil {
			return 0, nil, err
		}
		resp, err := balancerpb.NewBalancerClient(c.Conn()).Control(r.Context(), &balancerpb.ControlRequest{Pause: pause})
		if err != nil {
			return 0, nil, ranges.FromStatus(err)
		}
		return http.StatusOK, balancerStores(resp.Stores), nil
	}
}

func balancerStores(stores []*balancerpb.StoreStatus) []BalancerStore {
	sort.Slice(stores, func(i, j int) bool { return stores[i].StoreId < stores[j].StoreId })
	out := []BalancerStore{}
	for _, st := range stores {
		out = append(out, BalancerStoreOf(st))
	}
	return out
}
