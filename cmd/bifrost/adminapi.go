package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bifrost-mq/bifrost/api"
)

// The admin commands on sessions, retained messages, publishing and
// subscriptions call the HTTP API of a frontend (--api-addr), not a store's
// gRPC services: the frontend runs them as its clients' packets run.

// apiCommands are the admin commands that call the HTTP API, with their
// subcommands and how many arguments each takes.
var apiCommands = map[string]map[string]int{
	"sessions": {"list": 0, "show": 1, "kick": 1},
	"retain":   {"get": 1, "set": 2, "clear": 1},
	"pub":      {"": 2},
	"sub":      {"add": 2, "remove": 2},
}

// apiArgs are the flags of the API commands.
type apiArgs struct {
	addr, token, tokenFile, tenant string
	prefix, cursor, filter         string
	qos                            uint
	retain, base64                 bool
	contentType, responseTopic     string
	correlationData                string
	userProps                      userPropsFlag
	expiry, payloadFormat          int
	noLocal, retainAsPublished     bool
	subID, retainHandling          uint
}

func (a *apiArgs) register(fs *flag.FlagSet) {
	fs.StringVar(&a.addr, "api-addr", api.DefaultAddr, "HTTP API address of a frontend or standalone (sessions, retain, pub, sub)")
	fs.StringVar(&a.token, "api-token", "", "bearer token of the HTTP API")
	fs.StringVar(&a.tokenFile, "api-token-file", "", "file whose first line is the bearer token of the HTTP API")
	fs.StringVar(&a.tenant, "tenant", api.DefaultTenant, "tenant of sessions, retain, pub and sub")
	fs.StringVar(&a.prefix, "prefix", "", "sessions list: client ID prefix")
	fs.StringVar(&a.cursor, "cursor", "", "sessions list, retain get --filter: the page after this cursor")
	fs.StringVar(&a.filter, "filter", "", "retain get: a page of the retained messages this filter matches (instead of TOPIC)")
	fs.UintVar(&a.qos, "qos", 0, "pub, retain set, sub add: QoS 0, 1 or 2")
	fs.BoolVar(&a.retain, "retain", false, "pub: also store as the topic's retained message")
	fs.BoolVar(&a.base64, "base64", false, "pub, retain set: PAYLOAD and --correlation-data are base64; retain get: print payloads as base64")
	fs.StringVar(&a.contentType, "content-type", "", "pub, retain set: content type (MQTT 5.0)")
	fs.StringVar(&a.responseTopic, "response-topic", "", "pub, retain set: response topic (MQTT 5.0)")
	fs.StringVar(&a.correlationData, "correlation-data", "", "pub, retain set: correlation data (MQTT 5.0)")
	fs.Var(&a.userProps, "user-property", "pub, retain set: a user property key=value (MQTT 5.0; repeat for more)")
	fs.IntVar(&a.expiry, "message-expiry", -1, "pub, retain set: message expiry interval in seconds (-1: none)")
	fs.IntVar(&a.payloadFormat, "payload-format", -1, "pub, retain set: payload format indicator 0 or 1 (-1: none)")
	fs.BoolVar(&a.noLocal, "no-local", false, "sub add: no local")
	fs.BoolVar(&a.retainAsPublished, "retain-as-published", false, "sub add: retain as published")
	fs.UintVar(&a.subID, "subscription-id", 0, "sub add: subscription identifier (0: none)")
	fs.UintVar(&a.retainHandling, "retain-handling", 0, "sub add, a connected session: retained messages 0 sent, 1 only for a new subscription, 2 none")
}

// userPropsFlag collects --user-property key=value, in order.
type userPropsFlag []api.UserProperty

func (u *userPropsFlag) String() string { return fmt.Sprint(*u) }

func (u *userPropsFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok {
		return errors.New("want key=value")
	}
	*u = append(*u, api.UserProperty{Key: k, Value: val})
	return nil
}

// checkAPIArgs validates an API command's arguments; sub is "" for pub.
func (a *adminCmd) checkAPIArgs(pos []string) error {
	cmd := pos[0]
	subs := apiCommands[cmd]
	args := pos[1:]
	sub := ""
	if _, single := subs[""]; !single {
		if len(args) == 0 {
			return usagef("bifrost admin %s: missing subcommand (%s)", cmd, strings.Join(sortedKeys(subs), ", "))
		}
		sub, args = args[0], args[1:]
	}
	n, ok := subs[sub]
	if !ok {
		return usagef("bifrost admin %s: unknown subcommand %q (want %s)", cmd, sub, strings.Join(sortedKeys(subs), ", "))
	}
	if cmd == "retain" && sub == "get" && a.api.filter != "" {
		n = 0
	}
	if len(args) != n {
		return usagef("bifrost admin %s: want %d argument(s), got %d", strings.TrimSpace(cmd+" "+sub), n, len(args))
	}
	if a.api.qos > 2 {
		return usagef("bifrost admin %s: --qos must be 0, 1 or 2", cmd)
	}
	if a.limit == 0 || a.limit > 1000 {
		return usagef("bifrost admin %s: --limit must be 1 to 1000", cmd)
	}
	if a.api.token != "" && a.api.tokenFile != "" {
		return usagef("bifrost admin: --api-token and --api-token-file: give one")
	}
	return nil
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// apiClient calls the HTTP API.
type apiClient struct {
	base, token string
	http        http.Client
}

func (a *adminCmd) apiClient() (*apiClient, error) {
	token := a.api.token
	if a.api.tokenFile != "" {
		var err error
		if token, err = readTokenFile(a.api.tokenFile); err != nil {
			return nil, usagef("bifrost admin: %v", err)
		}
	}
	return &apiClient{base: "http://" + a.api.addr, token: token}, nil
}

// do makes one call; an error answer is an exit 1 with the API's message.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("bifrost admin: %v", err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e api.Error
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		return &exitError{code: 1, msg: fmt.Sprintf("bifrost admin: %s %s: %s: %s", method, path, resp.Status, e.Error)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("undecodable answer of %s %s: %w", method, path, err)
		}
	}
	return nil
}

// runAPI runs an API command (checked by checkAPIArgs).
func (a *adminCmd) runAPI(ctx context.Context, pos []string) error {
	c, err := a.apiClient()
	if err != nil {
		return err
	}
	q := url.Values{"tenant": {a.api.tenant}}
	switch pos[0] {
	case "pub":
		m := a.message(pos[1], pos[2])
		m.Retain = a.api.retain
		var res api.PublishResult
		if err := c.do(ctx, "POST", "/api/v1/publish", q, m, &res); err != nil {
			return err
		}
		if a.json {
			return a.printJSON(res)
		}
		fmt.Fprintf(a.out, "published to %d subscriber(s)\n", res.Subscribers)
		return nil
	case "retain":
		return a.retained(ctx, c, q, pos[1], pos[2:])
	case "sub":
		path := "/api/v1/sessions/" + url.PathEscape(pos[2]) + "/subscriptions"
		if pos[1] == "add" {
			s := api.Subscription{Filter: pos[3], QoS: uint32(a.api.qos), NoLocal: a.api.noLocal,
				RetainAsPublished: a.api.retainAsPublished, SubscriptionID: uint32(a.api.subID),
				RetainHandling: uint32(a.api.retainHandling)}
			if err := c.do(ctx, "POST", path, q, s, nil); err != nil {
				return err
			}
			return a.done(map[string]any{"client_id": pos[2], "filter": pos[3], "ok": true})
		}
		q.Set("filter", pos[3])
		if err := c.do(ctx, "DELETE", path, q, nil, nil); err != nil {
			return err
		}
		return a.done(map[string]any{"client_id": pos[2], "filter": pos[3], "ok": true})
	}
	return a.sessions(ctx, c, q, pos[1], pos[2:])
}

// message is the message of pub and retain set.
func (a *adminCmd) message(topic, payload string) api.Message {
	m := api.Message{Topic: topic, Payload: payload, QoS: uint32(a.api.qos), ContentType: a.api.contentType,
		ResponseTopic: a.api.responseTopic, CorrelationData: a.api.correlationData, UserProperties: a.api.userProps}
	if a.api.base64 {
		m.Encoding = api.EncodingBase64
	}
	if a.api.expiry >= 0 {
		e := uint32(a.api.expiry)
		m.MessageExpiry = &e
	}
	if a.api.payloadFormat >= 0 {
		f := uint32(a.api.payloadFormat)
		m.PayloadFormat = &f
	}
	return m
}

func (a *adminCmd) retained(ctx context.Context, c *apiClient, q url.Values, verb string, args []string) error {
	switch verb {
	case "set":
		if err := c.do(ctx, "PUT", "/api/v1/retained", q, a.message(args[0], args[1]), nil); err != nil {
			return err
		}
		return a.done(map[string]any{"topic": args[0], "ok": true})
	case "clear":
		q.Set("topic", args[0])
		if err := c.do(ctx, "DELETE", "/api/v1/retained", q, nil, nil); err != nil {
			return err
		}
		return a.done(map[string]any{"topic": args[0], "ok": true})
	}
	if a.api.base64 {
		q.Set("encoding", api.EncodingBase64)
	}
	if a.api.filter == "" {
		q.Set("topic", args[0])
		var m api.Message
		if err := c.do(ctx, "GET", "/api/v1/retained", q, nil, &m); err != nil {
			return err
		}
		if a.json {
			return a.printJSON(m)
		}
		fmt.Fprintln(a.out, m.Payload)
		return nil
	}
	q.Set("filter", a.api.filter)
	q.Set("limit", fmt.Sprint(a.limit))
	q.Set("cursor", a.api.cursor)
	var page api.RetainedPage
	if err := c.do(ctx, "GET", "/api/v1/retained", q, nil, &page); err != nil {
		return err
	}
	if a.json {
		return a.printJSON(page)
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tQOS\tPAYLOAD")
	for _, m := range page.Messages {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", m.Topic, m.QoS, m.Payload)
	}
	if page.NextCursor != "" {
		fmt.Fprintf(tw, "(more: continue with --cursor %s)\n", page.NextCursor)
	}
	return tw.Flush()
}

func (a *adminCmd) sessions(ctx context.Context, c *apiClient, q url.Values, verb string, args []string) error {
	switch verb {
	case "kick":
		if err := c.do(ctx, "POST", "/api/v1/sessions/"+url.PathEscape(args[0])+"/kick", q, nil, nil); err != nil {
			return err
		}
		return a.done(map[string]any{"client_id": args[0], "kicked": true})
	case "show":
		var s api.Session
		if err := c.do(ctx, "GET", "/api/v1/sessions/"+url.PathEscape(args[0]), q, nil, &s); err != nil {
			return err
		}
		if a.json {
			return a.printJSON(s)
		}
		tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "client id\t%s\npersistent\t%v\nonline\t%v\nfrontend\t%s\n", s.ClientID, s.Persistent, s.Online, dash(s.Frontend))
		fmt.Fprintf(tw, "queued\t%d (qos 0), %d (qos 1/2)\ndropped\t%d (qos 0), %d (qos 1/2)\ninflight\t%s\n",
			s.QueuedQoS0, s.QueuedQoS12, s.DroppedQoS0, s.DroppedQoS12, inflight(s.Inflight))
		fmt.Fprintf(tw, "expiry\t%ds\nexpires\t%s\n", s.ExpirySeconds, unixMs(s.ExpiresUnixMs))
		for _, sub := range s.Subscriptions {
			fmt.Fprintf(tw, "subscription\t%s qos %d\n", sub.Filter, sub.QoS)
		}
		return tw.Flush()
	}
	q.Set("prefix", a.api.prefix)
	q.Set("cursor", a.api.cursor)
	q.Set("limit", fmt.Sprint(a.limit))
	var page api.SessionPage
	if err := c.do(ctx, "GET", "/api/v1/sessions", q, nil, &page); err != nil {
		return err
	}
	if a.json {
		return a.printJSON(page)
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT ID\tONLINE\tFRONTEND\tSUBSCRIPTIONS\tQUEUED\tINFLIGHT\tEXPIRES")
	for _, s := range page.Sessions {
		fmt.Fprintf(tw, "%s\t%v\t%s\t%d\t%d\t%s\t%s\n", s.ClientID, s.Online, dash(s.Frontend), len(s.Subscriptions),
			s.QueuedQoS0+s.QueuedQoS12, inflight(s.Inflight), unixMs(s.ExpiresUnixMs))
	}
	if page.NextCursor != "" {
		fmt.Fprintf(tw, "(more: continue with --cursor %q)\n", page.NextCursor)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func inflight(n *int) string {
	if n == nil {
		return "-"
	}
	return fmt.Sprint(*n)
}

func unixMs(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}
