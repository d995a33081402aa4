package dist

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/kvstore"
)

// Route keys: tenant 0x00, each level of the subscription (share prefix
// included) followed by 0x00, a 0x00 ending the filter, the receiver kind
// byte and the receiver ID. All routes of a tenant share the prefix
// tenant 0x00, and all receivers of one filter sit together.
//
// A subscription longer than MaxSubscriptionInKey bytes (MQTT allows
// 65,535, the store's keys 4 KiB) is keyed by its first
// MaxSubscriptionInKey bytes, cut into levels the same way, and one more
// level, 0x01 and the hex SHA-256 of the whole subscription; the whole
// subscription is in the value, which the trie is built from (the key is
// only where the route lives, never read back). Such a key cannot be a
// short subscription's: read as levels, it names a subscription longer
// than MaxSubscriptionInKey. Neither form holds a zero byte inside a level,
// so a filter's key prefix still ends in the two zero bytes AlignSplitKey
// looks for. See docs/coprocessors.md, "Long topics".
func routeKey(tenant string, sub Subscription, r Receiver) []byte {
	b := subscriptionPrefix(tenant, sub)
	b = append(b, r.Kind)
	return append(b, r.ID...)
}

// MaxSubscriptionInKey is how many bytes of a subscription a route key
// carries; a longer one is keyed by that much of it and its digest.
const MaxSubscriptionInKey = 1024

// subscriptionPrefix is the key prefix of every route of one subscription:
// tenant 0x00, its levels each ended by 0x00, and 0x00.
func subscriptionPrefix(tenant string, sub Subscription) []byte {
	s := sub.String()
	var digest []byte
	if len(s) > MaxSubscriptionInKey {
		sum := sha256.Sum256([]byte(s))
		digest, s = sum[:], s[:MaxSubscriptionInKey]
	}
	b := make([]byte, 0, len(tenant)+len(s)+2*len(digest)+8)
	b = append(b, tenant...)
	b = append(b, 0)
	for _, l := range strings.Split(s, "/") {
		b = append(b, l...)
		b = append(b, 0)
	}
	if digest != nil {
		b = append(b, 1)
		b = hex.AppendEncode(b, digest)
		b = append(b, 0)
	}
	return append(b, 0)
}

// TenantSpan is the key span of all routes of a tenant.
func TenantSpan(tenant string) (start, end []byte) {
	start = append([]byte(tenant), 0)
	end = append([]byte(tenant), 1)
	return start, end
}

func validTenant(t string) bool { return !strings.ContainsRune(t, 0) }

// Coprocessor is the dist coprocessor of one range replica: the routes of the
// range's span in Pebble, mirrored in a Trie for matching.
type Coprocessor struct {
	trie *Trie
}

// New makes the dist coprocessor of one replica; it is a kvstore.CoprocessorFactory.
func New(rangeID uint64) kvstore.Coprocessor { return &Coprocessor{trie: NewTrie()} }

var _ kvstore.Coprocessor = (*Coprocessor)(nil)

func decodeRoute(rt *distpb.Route) (string, Subscription, Receiver, error) {
	if rt == nil || rt.Receiver == nil {
		return "", Subscription{}, Receiver{}, errors.New("route without receiver")
	}
	if !validTenant(rt.Tenant) || rt.Receiver.Id == "" || strings.ContainsRune(rt.Receiver.Id, 0) ||
		rt.Receiver.Kind == 0 || rt.Receiver.Kind > 255 {
		return "", Subscription{}, Receiver{}, errors.New("bad tenant or receiver")
	}
	sub, err := ParseSubscription(rt.Subscription)
	if err != nil {
		return "", Subscription{}, Receiver{}, err
	}
	return rt.Tenant, sub, Receiver{Kind: byte(rt.Receiver.Kind), ID: rt.Receiver.Id}, nil
}

// Mutate adds or removes a route.
func (c *Coprocessor) Mutate(tx kvstore.Tx, input []byte) ([]byte, error) {
	in := &distpb.Input{}
	if err := proto.Unmarshal(input, in); err != nil {
		return output(distpb.Result_RESULT_INVALID, "undecodable input")
	}
	switch op := in.Op.(type) {
	case *distpb.Input_Add:
		tenant, sub, r, err := decodeRoute(op.Add.Route)
		if err != nil {
			return output(distpb.Result_RESULT_INVALID, err.Error())
		}
		key := routeKey(tenant, sub, r)
		if _, found, err := tx.Get(key); err != nil {
			return nil, err
		} else if found {
			return output(distpb.Result_RESULT_EXISTS, "")
		}
		if max := op.Add.MaxRoutesPerTenant; max > 0 && uint64(c.trie.TenantLen(tenant))+op.Add.RoutesElsewhere >= uint64(max) {
			return output(distpb.Result_RESULT_LIMIT, fmt.Sprintf("tenant %q has %d routes, the limit", tenant, max))
		}
		val, err := proto.Marshal(op.Add.Route)
		if err != nil {
			return nil, err
		}
		if err := tx.Set(key, val); err != nil {
			return nil, err
		}
		c.trie.Add(tenant, sub, r)
		return output(distpb.Result_RESULT_OK, "")
	case *distpb.Input_Remove:
		tenant, sub, r, err := decodeRoute(op.Remove.Route)
		if err != nil {
			return output(distpb.Result_RESULT_INVALID, err.Error())
		}
		key := routeKey(tenant, sub, r)
		if _, found, err := tx.Get(key); err != nil {
			return nil, err
		} else if !found {
			return output(distpb.Result_RESULT_NOT_FOUND, "")
		}
		if err := tx.Delete(key); err != nil {
			return nil, err
		}
		c.trie.Remove(tenant, sub, r)
		return output(distpb.Result_RESULT_OK, "")
	}
	return output(distpb.Result_RESULT_INVALID, "empty input")
}

func output(r distpb.Result, reason string) ([]byte, error) {
	return proto.Marshal(&distpb.Output{Result: r, Reason: reason})
}

// Query matches topics against the range's routes.
func (c *Coprocessor) Query(r kvstore.Reader, input []byte) ([]byte, error) {
	req := &distpb.MatchRequest{}
	if err := proto.Unmarshal(input, req); err != nil {
		return nil, fmt.Errorf("undecodable match request: %w", err)
	}
	if req.CountRoutes {
		return proto.Marshal(&distpb.MatchResponse{RouteCount: uint64(c.trie.TenantLen(req.Tenant))})
	}
	resp := &distpb.MatchResponse{Topics: make([]*distpb.TopicMatches, len(req.Topics))}
	for i, topic := range req.Topics {
		tm := &distpb.TopicMatches{}
		publisher := req.Publisher
		if len(req.Publishers) == len(req.Topics) {
			publisher = req.Publishers[i]
		}
		seed := req.Seed + uint64(i)
		if len(req.Seeds) == len(req.Topics) {
			seed = req.Seeds[i]
		}
		for _, m := range c.trie.Match(req.Tenant, topic, publisher, seed) {
			tm.Matched = append(tm.Matched, &distpb.Matched{
				Receiver:     &distpb.Receiver{Kind: uint32(m.Receiver.Kind), Id: m.Receiver.ID},
				Subscription: m.Sub.String(),
			})
		}
		resp.Topics[i] = tm
	}
	return proto.Marshal(resp)
}

// Reset rebuilds the trie from the routes in the range's span. It builds
// the new trie aside and swaps it in whole, so that a match running
// meanwhile misses no route that was there before and after.
func (c *Coprocessor) Reset(r kvstore.Reader) error {
	fresh := NewTrie()
	var bad error
	err := r.Iterate(nil, nil, func(key, value []byte) bool {
		rt := &distpb.Route{}
		if err := proto.Unmarshal(value, rt); err != nil {
			bad = fmt.Errorf("corrupt route at %q: %w", key, err)
			return false
		}
		tenant, sub, recv, err := decodeRoute(rt)
		if err != nil {
			bad = fmt.Errorf("corrupt route at %q: %w", key, err)
			return false
		}
		fresh.Add(tenant, sub, recv)
		return true
	})
	if err != nil {
		return err
	}
	if bad != nil {
		return bad
	}
	c.trie.replace(fresh)
	return nil
}

// Routes returns how many routes the replica holds.
func (c *Coprocessor) Routes() int { return c.trie.Len() }

var _ kvstore.SplitAligner = (*Coprocessor)(nil)

// AlignSplitKey moves a split key to the start of the key prefix of the
// (tenant, subscription) whose routes it would cut, so that every route of
// one filter, the members of a $share or $oshare group included, stays in
// one range. Match picks one member of a group per range it asks, so a
// group cut in two would deliver a message to one member on each side, and
// a $oshare group would no longer send one publisher to one member.
//
// The routes of one subscription are prefix P + kind + ID, where P (tenant
// 0x00, levels each ended by 0x00, 0x00) ends in two zero bytes, the kind
// is not zero and the ID holds no zero byte. A key cuts the routes of P
// only if P is a proper prefix of it followed by a byte other than zero, so
// the key is moved to its shortest prefix of that shape: no shorter
// subscription prefix can then be cut. Filters with empty levels (a//b)
// hold zero pairs inside P; for them the key may move further left, to a
// boundary that is still whole. The balancer (kvstore.Store.SplitKey) and
// admin splits (ranges.Node.Split) both call this through
// kvstore.SplitAligner, as they do inbox's.
func (c *Coprocessor) AlignSplitKey(key []byte) []byte {
	t := bytes.IndexByte(key, 0)
	if t < 0 {
		return key
	}
	for j := t + 2; j < len(key); j++ {
		if key[j-1] == 0 && key[j-2] == 0 && key[j] != 0 {
			return key[:j:j]
		}
	}
	return key
}
