// Package retain is the retained-message coprocessor: per tenant, the last
// retained message of each topic, matched by a subscription's filter with
// the MQTT wildcard rules, with message expiry honoured.
package retain

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/kvstore"
)

// DefaultMatchLimit bounds a page of a match: the messages of a match that
// names no limit, and of one that names more.
const DefaultMatchLimit = 1000

// MaxTopicInKey is how many bytes of a topic a key carries: a topic may be
// up to 65,535 bytes (MQTT-4.7.3-3), the store's keys 4 KiB.
const MaxTopicInKey = 1024

// Key is the storage key of a tenant's retained topic: tenant 0x00 topic,
// or, for a topic longer than MaxTopicInKey, tenant 0x00, its first
// MaxTopicInKey bytes, 0x00 and the hex SHA-256 of the whole topic. A topic
// holds no zero byte, so the second zero tells the long form; the message
// in the value names the whole topic. Keys sort as their topics do, but
// for long topics alike in their first MaxTopicInKey bytes, which sort by
// digest after the topic that is exactly those bytes. See
// docs/coprocessors.md, "Long topics".
func Key(tenant, topic string) []byte {
	n := len(topic)
	if n > MaxTopicInKey {
		n = MaxTopicInKey + 1 + 2*sha256.Size
	}
	b := make([]byte, 0, len(tenant)+1+n)
	b = append(b, tenant...)
	b = append(b, 0)
	return appendTopic(b, topic)
}

// appendTopic appends the part of a key that names a topic.
func appendTopic(b []byte, topic string) []byte {
	if len(topic) <= MaxTopicInKey {
		return append(b, topic...)
	}
	sum := sha256.Sum256([]byte(topic))
	b = append(b, topic[:MaxTopicInKey]...)
	b = append(b, 0)
	return hex.AppendEncode(b, sum[:])
}

// TenantSpan is the key span of a tenant's retained messages.
func TenantSpan(tenant string) (start, end []byte) {
	return append([]byte(tenant), 0), append([]byte(tenant), 1)
}

// Coprocessor is the retain coprocessor of one range replica.
type Coprocessor struct {
	index *Index
}

// New makes the retain coprocessor of one replica; a kvstore.CoprocessorFactory.
func New(rangeID uint64) kvstore.Coprocessor { return &Coprocessor{index: NewIndex()} }

func setResponse(r retainpb.Result, reason string) ([]byte, error) {
	return proto.Marshal(&retainpb.SetResponse{Result: r, Reason: reason})
}

func validate(tenant string, m *retainpb.Message) error {
	if strings.ContainsRune(tenant, 0) {
		return fmt.Errorf("tenant contains NUL")
	}
	if m == nil {
		return fmt.Errorf("no message")
	}
	return dist.ValidateTopicName(m.Topic)
}

// Mutate sets or deletes (empty payload) a topic's retained message.
func (c *Coprocessor) Mutate(tx kvstore.Tx, input []byte) ([]byte, error) {
	req := &retainpb.SetRequest{}
	if err := proto.Unmarshal(input, req); err != nil {
		return setResponse(retainpb.Result_RESULT_INVALID, "undecodable input")
	}
	if err := validate(req.Tenant, req.Message); err != nil {
		return setResponse(retainpb.Result_RESULT_INVALID, err.Error())
	}
	key := Key(req.Tenant, req.Message.Topic)
	_, exists, err := tx.Get(key)
	if err != nil {
		return nil, err
	}
	if len(req.Message.Payload) == 0 { // MQTT-3.3.1-10: an empty payload removes it
		if exists {
			if err := tx.Delete(key); err != nil {
				return nil, err
			}
			c.index.Remove(req.Tenant, req.Message.Topic)
		}
		return setResponse(retainpb.Result_RESULT_DELETED, "")
	}
	if !exists && req.MaxPerTenant > 0 && c.index.TenantLen(req.Tenant) >= int(req.MaxPerTenant) {
		return setResponse(retainpb.Result_RESULT_LIMIT, fmt.Sprintf("tenant %q has %d retained messages, the limit", req.Tenant, req.MaxPerTenant))
	}
	val, err := proto.Marshal(req.Message)
	if err != nil {
		return nil, err
	}
	if err := tx.Set(key, val); err != nil {
		return nil, err
	}
	c.index.Add(req.Tenant, req.Message.Topic)
	return setResponse(retainpb.Result_RESULT_OK, "")
}

// MaxMatchBytes ends a page of a match once its messages hold that many
// bytes (a page holds at least one message).
const MaxMatchBytes = 4 << 20

// Query returns a page of the unexpired retained messages a filter
// matches in the range, from req.From on, in key order; Next says where
// the range's next page starts (empty: none is left in this range).
func (c *Coprocessor) Query(r kvstore.Reader, input []byte) ([]byte, error) {
	req := &retainpb.MatchRequest{}
	if err := proto.Unmarshal(input, req); err != nil {
		return nil, fmt.Errorf("undecodable match request: %w", err)
	}
	limit := pageLimit(req.Limit)
	now := req.NowUnixMs
	if now == 0 {
		now = time.Now().UnixMilli()
	}
	start, end := TenantSpan(req.Tenant)
	from := ""
	switch {
	case bytes.Compare(req.From, end) >= 0:
		return proto.Marshal(&retainpb.MatchResponse{})
	case bytes.Compare(req.From, start) > 0:
		from = string(req.From[len(start):])
	}
	resp := &retainpb.MatchResponse{}
	topics := c.index.Match(req.Tenant, req.Filter, from, limit)
	size := 0
	for i, topic := range topics {
		if size >= MaxMatchBytes {
			resp.Next = append(Key(req.Tenant, topics[i-1]), 0)
			break
		}
		v, found, err := r.Get(Key(req.Tenant, topic))
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		m := &retainpb.Message{}
		if err := proto.Unmarshal(v, m); err != nil {
			return nil, fmt.Errorf("corrupt retained message %.128q: %w", topic, err)
		}
		if m.ExpiresUnixMs != 0 && m.ExpiresUnixMs <= now { // MQTT-3.3.2-5
			continue
		}
		resp.Messages = append(resp.Messages, m)
		size += len(v)
	}
	if resp.Next == nil && len(topics) == limit {
		// The index may hold more after the last.
		resp.Next = append(Key(req.Tenant, topics[len(topics)-1]), 0)
	}
	return proto.Marshal(resp)
}

// pageLimit is the messages a match's page may hold.
func pageLimit(asked uint32) int {
	if asked == 0 || asked > DefaultMatchLimit {
		return DefaultMatchLimit
	}
	return int(asked)
}

// Reset rebuilds the index from the range's messages. It builds the new
// index aside and swaps it in whole, so that a match running meanwhile
// misses no message that was there before and after.
func (c *Coprocessor) Reset(r kvstore.Reader) error {
	fresh := NewIndex()
	var bad error
	err := r.Iterate(nil, nil, func(key, value []byte) bool {
		tenant, topic, ok := strings.Cut(string(key), "\x00")
		if !ok {
			return true
		}
		if strings.IndexByte(topic, 0) >= 0 {
			// A long topic's key holds only its start: the message
			// names it.
			m := &retainpb.Message{}
			if err := proto.Unmarshal(value, m); err != nil {
				bad = fmt.Errorf("corrupt retained message at %q: %w", key[:min(len(key), 128)], err)
				return false
			}
			topic = m.Topic
		}
		fresh.Add(tenant, topic)
		return true
	})
	if err != nil {
		return err
	}
	if bad != nil {
		return bad
	}
	c.index.replace(fresh)
	return nil
}

func validateFilter(f string) error {
	sub, err := dist.ParseSubscription(f)
	if err != nil {
		return err
	}
	if sub.Group != "" {
		return fmt.Errorf("a shared subscription gets no retained messages")
	}
	return nil
}
