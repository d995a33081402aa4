package api

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bifrost-mq/bifrost/balancer/balancerpb"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// The JSON the API takes and answers with; the CLI (bifrost admin) decodes
// the same types.

// Payload encodings.
const (
	EncodingUTF8   = "utf8"
	EncodingBase64 = "base64"
)

// UserProperty is an MQTT 5.0 user property (ordered; a key may repeat).
type UserProperty struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Message is a message to publish or retain, or a retained message read.
// Payload and CorrelationData are UTF-8 text, or base64 when Encoding is
// "base64".
type Message struct {
	Topic    string `json:"topic"`
	Payload  string `json:"payload"`
	Encoding string `json:"encoding,omitempty"`
	QoS      uint32 `json:"qos"`
	Retain   bool   `json:"retain,omitempty"`
	// MQTT 5.0 properties.
	ContentType     string         `json:"content_type,omitempty"`
	ResponseTopic   string         `json:"response_topic,omitempty"`
	CorrelationData string         `json:"correlation_data,omitempty"`
	UserProperties  []UserProperty `json:"user_properties,omitempty"`
	// MessageExpiry is the message expiry interval in seconds (absent:
	// never expires).
	MessageExpiry *uint32 `json:"message_expiry,omitempty"`
	// PayloadFormat is the payload format indicator: 0 bytes, 1 UTF-8.
	PayloadFormat *uint32 `json:"payload_format,omitempty"`
	// ExpiresUnixMs (read only) is when a retained message expires.
	ExpiresUnixMs int64 `json:"expires_unix_ms,omitempty"`
}

// decode is the text or base64 of a field under the message's encoding.
func decode(enc, field, v string) ([]byte, error) {
	switch enc {
	case "", EncodingUTF8:
		return []byte(v), nil
	case EncodingBase64:
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("%s is not base64: %v", field, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("encoding %q: want utf8 or base64", enc)
}

// toMQTT is the message as the broker carries it; now stamps its expiry.
func (m *Message) toMQTT(now time.Time) (*mqttpb.Message, error) {
	payload, err := decode(m.Encoding, "payload", m.Payload)
	if err != nil {
		return nil, err
	}
	corr, err := decode(m.Encoding, "correlation_data", m.CorrelationData)
	if err != nil {
		return nil, err
	}
	out := &mqttpb.Message{Topic: m.Topic, Payload: payload, Qos: m.QoS, Retain: m.Retain, Publisher: "",
		ContentType: m.ContentType, ResponseTopic: m.ResponseTopic, CorrelationData: corr}
	if len(corr) == 0 {
		out.CorrelationData = nil
	}
	if m.PayloadFormat != nil {
		out.HasPayloadFormat, out.PayloadFormat = true, *m.PayloadFormat
	}
	if m.MessageExpiry != nil {
		out.ExpiresUnixMs = now.Add(time.Duration(*m.MessageExpiry) * time.Second).UnixMilli()
	}
	for _, up := range m.UserProperties {
		out.UserProperties = append(out.UserProperties, &mqttpb.UserProperty{Key: up.Key, Value: up.Value})
	}
	return out, nil
}

// messageOf is a broker message in JSON: text when payload and correlation
// data are UTF-8 (and base64 was not asked for), else base64.
func messageOf(m *mqttpb.Message, forceBase64 bool) Message {
	out := Message{Topic: m.Topic, QoS: m.Qos, Retain: m.Retain, ContentType: m.ContentType, ResponseTopic: m.ResponseTopic,
		ExpiresUnixMs: m.ExpiresUnixMs, Encoding: EncodingUTF8}
	if forceBase64 || !utf8.Valid(m.Payload) || !utf8.Valid(m.CorrelationData) {
		out.Encoding = EncodingBase64
		out.Payload = base64.StdEncoding.EncodeToString(m.Payload)
		out.CorrelationData = base64.StdEncoding.EncodeToString(m.CorrelationData)
	} else {
		out.Payload, out.CorrelationData = string(m.Payload), string(m.CorrelationData)
	}
	if m.HasPayloadFormat {
		f := m.PayloadFormat
		out.PayloadFormat = &f
	}
	for _, up := range m.UserProperties {
		out.UserProperties = append(out.UserProperties, UserProperty{up.Key, up.Value})
	}
	return out
}

// PublishResult answers a publish.
type PublishResult struct {
	// Subscribers is how many subscribers the topic matched (sessions,
	// inboxes and other frontends' sessions), whether or not each could
	// take the message (a full queue drops it).
	Subscribers int `json:"subscribers"`
}

// RetainedPage is a page of retained messages; NextCursor continues it
// ("" when none is left).
type RetainedPage struct {
	Messages   []Message `json:"messages"`
	NextCursor string    `json:"next_cursor"`
}

// Subscription is a session's subscription and its options.
type Subscription struct {
	Filter            string `json:"filter"`
	QoS               uint32 `json:"qos"`
	NoLocal           bool   `json:"no_local,omitempty"`
	RetainAsPublished bool   `json:"retain_as_published,omitempty"`
	SubscriptionID    uint32 `json:"subscription_id,omitempty"`
	// RetainHandling (adding to a connected session only): 0 sends it the
	// filter's retained messages, 1 only when the subscription is new, 2
	// none. Not stored: a session shows it as 0.
	RetainHandling uint32 `json:"retain_handling,omitempty"`
}

// Session describes a session.
type Session struct {
	ClientID   string `json:"client_id"`
	Persistent bool   `json:"persistent"`
	Online     bool   `json:"online"`
	// Frontend is the gRPC address of the frontend the client is
	// connected to (empty when offline).
	Frontend string `json:"frontend,omitempty"`
	// Subscriptions of a persistent session (a clean session shows none:
	// its connection alone holds them).
	Subscriptions []Subscription `json:"subscriptions"`
	QueuedQoS0    uint64         `json:"queued_qos0"`
	QueuedQoS12   uint64         `json:"queued_qos12"`
	DroppedQoS0   uint64         `json:"dropped_qos0"`
	DroppedQoS12  uint64         `json:"dropped_qos12"`
	// Inflight is the QoS 1/2 messages sent and not acknowledged; absent
	// when the connection is on another frontend.
	Inflight       *int   `json:"inflight,omitempty"`
	ExpirySeconds  uint32 `json:"expiry_seconds"`
	ExpiresUnixMs  int64  `json:"expires_unix_ms,omitempty"`
	CreatedUnixMs  int64  `json:"created_unix_ms,omitempty"`
	DetachedUnixMs int64  `json:"detached_unix_ms,omitempty"`
}

func sessionOf(s *mqtt.SessionInfo) Session {
	out := Session{ClientID: s.ClientID, Persistent: s.Persistent, Online: s.Online, Frontend: s.Frontend,
		Subscriptions: []Subscription{}, QueuedQoS0: s.QueuedQoS0, QueuedQoS12: s.QueuedQoS12,
		DroppedQoS0: s.DroppedQoS0, DroppedQoS12: s.DroppedQoS12, ExpirySeconds: s.ExpirySeconds,
		ExpiresUnixMs: s.ExpiresUnixMs, CreatedUnixMs: s.CreatedUnixMs, DetachedUnixMs: s.DetachedUnixMs}
	if s.Inflight >= 0 {
		n := s.Inflight
		out.Inflight = &n
	}
	for f, o := range s.Subscriptions {
		out.Subscriptions = append(out.Subscriptions, Subscription{Filter: f, QoS: o.GetQos(), NoLocal: o.GetNoLocal(),
			RetainAsPublished: o.GetRetainAsPublished(), SubscriptionID: o.GetSubscriptionId()})
	}
	slices.SortFunc(out.Subscriptions, func(a, b Subscription) int { return strings.Compare(a.Filter, b.Filter) })
	return out
}

func (s Subscription) options() *inboxpb.SubOptions {
	return &inboxpb.SubOptions{Qos: s.QoS, NoLocal: s.NoLocal, RetainAsPublished: s.RetainAsPublished, SubscriptionId: s.SubscriptionID}
}

// SessionPage is a page of sessions; NextCursor continues it ("" when none
// is left).
type SessionPage struct {
	Sessions   []Session `json:"sessions"`
	NextCursor string    `json:"next_cursor"`
}

// KickResult answers a kick.
type KickResult struct {
	Kicked bool `json:"kicked"`
}

// StoreID is a store's ID in JSON: a decimal string. Store IDs are random
// 64-bit numbers, and a JSON number past 2^53 loses its last digits in
// JavaScript (and in every decoder that reads numbers as doubles).
// Decoding takes a string or a number.
type StoreID uint64

func (id StoreID) String() string { return strconv.FormatUint(uint64(id), 10) }

// MarshalJSON writes the ID as a string.
func (id StoreID) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, id.String()), nil
}

// UnmarshalJSON reads a string or a number.
func (id *StoreID) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("store ID %s: %w", b, err)
	}
	*id = StoreID(n)
	return nil
}

// Member is a cluster member.
type Member struct {
	Name    string  `json:"name"`
	StoreID StoreID `json:"store_id,omitempty"`
	Role    string  `json:"role"`
	Gossip  string  `json:"gossip"`
	GRPC    string  `json:"grpc"`
	Raft    string  `json:"raft"`
	State   string  `json:"state"`
}

// MemberOf is a member in JSON.
func MemberOf(m *rangespb.Member) Member {
	return Member{m.Name, StoreID(m.StoreId), m.Role, m.GossipAddr, m.GrpcAddr, m.RaftAddr, m.State}
}

// Range is a range in JSON: its keys as text when they are UTF-8, else
// 0x-hex.
type Range struct {
	ID         uint64    `json:"id"`
	Keyspace   string    `json:"keyspace"`
	Start      string    `json:"start"`
	End        string    `json:"end"`
	Ver        uint64    `json:"ver"`
	ConfVer    uint64    `json:"conf_ver"`
	Replicas   []StoreID `json:"replicas"`
	ReplicaIDs []uint64  `json:"replica_ids"`
	Leader     StoreID   `json:"leader"`
	State      string    `json:"state"`
	Size       uint64    `json:"size"`
}

// StateName is a range state's short name: normal, frozen, splitting.
func StateName(s kvpb.RangeState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "RANGE_STATE_"))
}

// Printable renders a key or value: as text when it is valid UTF-8, else
// 0x-hex.
func Printable(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return "0x" + hex.EncodeToString(b)
}

// RangeOf is a range in JSON.
func RangeOf(info *rangespb.RangeInfo) Range {
	d := info.Range
	r := Range{ID: d.Id, Keyspace: kvstore.KeyspaceName(d.Keyspace), Start: Printable(d.Start), End: Printable(d.End),
		Ver: d.Ver, ConfVer: d.ConfVer, Replicas: []StoreID{}, ReplicaIDs: []uint64{}, Size: info.ApproximateBytes,
		State: StateName(d.State)}
	for _, rep := range d.Replicas {
		r.Replicas = append(r.Replicas, StoreID(rep.StoreId))
		r.ReplicaIDs = append(r.ReplicaIDs, rep.ReplicaId)
		if rep.ReplicaId == info.LeaderReplicaId {
			r.Leader = StoreID(rep.StoreId)
		}
	}
	return r
}

// SplitRequest splits the range with ID Range, or the range of Keyspace
// that holds Key, at Key.
type SplitRequest struct {
	Range    uint64 `json:"range,omitempty"`
	Keyspace string `json:"keyspace,omitempty"`
	Key      string `json:"key"`
}

// SplitResult is the two ranges a split made.
type SplitResult struct {
	Left  Range `json:"left"`
	Right Range `json:"right"`
}

// MergeRequest merges a range with its right neighbour.
type MergeRequest struct {
	Range uint64 `json:"range"`
}

// BalancerDecision is one of a balancer's recent moves.
type BalancerDecision struct {
	UnixMs int64  `json:"unix_ms"`
	Action string `json:"action"`
	Error  string `json:"error,omitempty"`
}

// BalancerStore is one store's balancer.
type BalancerStore struct {
	StoreID  StoreID            `json:"store_id"`
	Paused   bool               `json:"paused"`
	Replicas uint32             `json:"replicas"`
	Leaders  uint32             `json:"leaders"`
	Recent   []BalancerDecision `json:"recent"`
	Error    string             `json:"error,omitempty"`
}

// BalancerStoreOf is a store's balancer status in JSON.
func BalancerStoreOf(s *balancerpb.StoreStatus) BalancerStore {
	st := BalancerStore{StoreID: StoreID(s.StoreId), Paused: s.Paused, Replicas: s.Replicas, Leaders: s.Leaders, Recent: []BalancerDecision{}, Error: s.Error}
	for _, d := range s.Recent {
		st.Recent = append(st.Recent, BalancerDecision{d.UnixMs, d.Action, d.Error})
	}
	return st
}

// Error is every error's body.
type Error struct {
	Error string `json:"error"`
}
