package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// QueueChecker judges a queue history, per persistent subscriber:
//
//   - lost: a message whose publish was acknowledged (PUBACK, PUBCOMP) and
//     invoked after the subscriber's first SUBACK, never delivered to it;
//   - QoS 2 duplicates: a message delivered at QoS 2 to the application
//     more than once (a resend the client drops, with the packet ID it holds
//     unreleased, is not one), or resent with the DUP flag clear;
//   - order (MQTT-4.6.0): of one publisher's acknowledged messages, the
//     first deliveries to a subscriber come in the order published;
//   - unexpected: a delivery of a message no publish sent, or whose
//     publish was refused;
//   - a lost session: a persistent subscriber's CONNACK without session
//     present after it had subscribed (its session never expires in a run).
//
// Any of these is invalid. QoS 1 duplicates are allowed and counted. With
// no subscription or no acknowledged publish the verdict is unknown.
type QueueChecker struct{}

func (QueueChecker) Name() string { return "queue" }

// QueueDetails is the checker's details in results.json.
type QueueDetails struct {
	Subscribers   int `json:"subscribers"`
	Acknowledged  int `json:"acknowledged"`
	Expected      int `json:"expected"` // (message, subscriber) pairs that must be delivered
	Delivered     int `json:"delivered"`
	Lost          int `json:"lost"`
	DuplicateQoS1 int `json:"duplicate_qos1"`
	DuplicateQoS2 int `json:"duplicate_qos2"`
	DroppedResend int `json:"dropped_resends"` // QoS 2 resends the client rightly dropped
	DupFlagWrong  int `json:"dup_flag_wrong"`
	OutOfOrder    int `json:"out_of_order"`
	Unexpected    int `json:"unexpected"`
	LostSessions  int `json:"lost_sessions"`
	// Examples: the first few problems of each kind.
	Examples map[string][]string `json:"examples,omitempty"`
}

type pubRecord struct {
	invoke int64
	typ    history.Type
}

// splitMessage parses "<publisher>:<n>".
func splitMessage(m string) (string, int, bool) {
	p, n, ok := strings.Cut(m, ":")
	if !ok {
		return "", 0, false
	}
	i, err := strconv.Atoi(n)
	return p, i, err == nil
}

func (QueueChecker) Check(_ context.Context, h history.History, _ string) jepsen.Result {
	pairs, err := h.Pairs()
	if err != nil {
		return jepsen.Result{Valid: jepsen.Unknown, Summary: "unreadable history: " + err.Error()}
	}
	d := QueueDetails{Examples: map[string][]string{}}
	example := func(kind, s string) {
		if len(d.Examples[kind]) < 5 {
			d.Examples[kind] = append(d.Examples[kind], s)
		}
	}
	pubs := map[string]pubRecord{}
	subscribedAt := map[string]int64{}
	type delivery struct {
		DeliverValue
		index int
	}
	deliveries := map[string][]delivery{}
	for _, p := range pairs {
		switch p.Invoke.F {
		case FPublish:
			var v PublishValue
			if json.Unmarshal(p.Invoke.Value, &v) == nil {
				pubs[v.Message] = pubRecord{invoke: p.Invoke.Time, typ: p.Completion.Type}
			}
		case FSubscribe:
			if _, ok := subscribedAt[p.Invoke.Key]; !ok {
				subscribedAt[p.Invoke.Key] = p.Invoke.Time
			}
		case FDeliver:
			var v DeliverValue
			if json.Unmarshal(p.Invoke.Value, &v) == nil {
				deliveries[p.Invoke.Key] = append(deliveries[p.Invoke.Key], delivery{v, p.Invoke.Index})
			}
		case FConnect, FDrain:
			var v ConnectValue
			if p.Completion.Type == history.OK && json.Unmarshal(p.Completion.Value, &v) == nil && v.LostSession {
				d.LostSessions++
				example("lost_session", fmt.Sprintf("%s: %s at event %d on %s found no session", p.Invoke.Key, p.Invoke.F, p.Completion.Index, v.Frontend))
			}
		}
	}
	for _, r := range pubs {
		if r.typ == history.OK {
			d.Acknowledged++
		}
	}
	subs := make([]string, 0, len(subscribedAt))
	for s := range subscribedAt {
		subs = append(subs, s)
	}
	sort.Strings(subs)
	d.Subscribers = len(subs)
	for _, sub := range subs {
		since := subscribedAt[sub]
		seen := map[string]int{}    // message -> deliveries the application saw
		first := map[string][]int{} // publisher -> n of acknowledged messages in first-delivery order
		for _, dv := range deliveries[sub] {
			r, published := pubs[dv.Message]
			if !published || r.typ == history.Fail {
				d.Unexpected++
				example("unexpected", fmt.Sprintf("%s got %q (event %d), which no publish sent", sub, dv.Message, dv.index))
				continue
			}
			if !dv.App {
				d.DroppedResend++
				if !dv.Dup {
					d.DupFlagWrong++
					example("dup_flag_wrong", fmt.Sprintf("%s got %q again with packet ID %d and DUP 0 (event %d)", sub, dv.Message, dv.PacketID, dv.index))
				}
				continue
			}
			seen[dv.Message]++
			if seen[dv.Message] > 1 {
				if dv.QoS == 2 {
					d.DuplicateQoS2++
					example("duplicate_qos2", fmt.Sprintf("%s got %q at QoS 2 a %s time (event %d, DUP %v, packet ID %d)", sub, dv.Message, ordinal(seen[dv.Message]), dv.index, dv.Dup, dv.PacketID))
				} else {
					d.DuplicateQoS1++
				}
				continue
			}
			d.Delivered++
			if r.typ == history.OK {
				pub, n, _ := splitMessage(dv.Message)
				first[pub] = append(first[pub], n)
			}
		}
		for pub, ns := range first {
			for i := 1; i < len(ns); i++ {
				if ns[i] < ns[i-1] {
					d.OutOfOrder++
					example("out_of_order", fmt.Sprintf("%s got %s:%d after %s:%d", sub, pub, ns[i], pub, ns[i-1]))
				}
			}
		}
		var lost []string
		for m, r := range pubs {
			if r.typ != history.OK || r.invoke < since {
				continue
			}
			d.Expected++
			if seen[m] == 0 {
				lost = append(lost, m)
			}
		}
		sort.Slice(lost, func(i, j int) bool { return lessMessage(lost[i], lost[j]) })
		d.Lost += len(lost)
		for _, m := range lost {
			example("lost", fmt.Sprintf("%s never got %s", sub, m))
		}
	}
	res := jepsen.Result{Valid: jepsen.Valid, Details: d}
	res.Summary = fmt.Sprintf("%d subscribers, %d acknowledged publishes, %d of %d expected deliveries made: %d lost, %d QoS 2 duplicates, %d DUP flags wrong, %d out of order, %d unexpected, %d sessions lost; %d QoS 1 duplicates, %d QoS 2 resends dropped",
		d.Subscribers, d.Acknowledged, d.Expected-d.Lost, d.Expected, d.Lost, d.DuplicateQoS2, d.DupFlagWrong, d.OutOfOrder, d.Unexpected, d.LostSessions, d.DuplicateQoS1, d.DroppedResend)
	switch {
	case d.Lost+d.DuplicateQoS2+d.DupFlagWrong+d.OutOfOrder+d.Unexpected+d.LostSessions > 0:
		res.Valid = jepsen.Invalid
	case d.Subscribers == 0 || d.Acknowledged == 0 || d.Expected == 0:
		res.Valid = jepsen.Unknown
		res.Summary = "nothing to check: " + res.Summary
	}
	return res
}

func lessMessage(a, b string) bool {
	pa, na, _ := splitMessage(a)
	pb, nb, _ := splitMessage(b)
	if pa != pb {
		return pa < pb
	}
	return na < nb
}

func ordinal(n int) string {
	switch n {
	case 2:
		return "second"
	case 3:
		return "third"
	}
	return strconv.Itoa(n) + "th"
}
