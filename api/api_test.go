package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/bifrost-mq/bifrost/api"
	"github.com/bifrost-mq/bifrost/balancer"
	"github.com/bifrost-mq/bifrost/balancer/balancerpb"
	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

const testToken = "s3cret-token"

// env is a real cluster of stores, each with an MQTT frontend and the API
// in front of it, as bifrost standalone runs them.
type env struct {
	t       *testing.T
	cluster *rangestest.Cluster
	reg     *prometheus.Registry
	mu      sync.Mutex
	fronts  map[*ranges.Node]*mqtt.Server
	mqtt    []string // MQTT address by node
	apis    []string // API base URL by node
}

func startEnv(t *testing.T, nodes int) *env {
	t.Helper()
	e := &env{t: t, reg: prometheus.NewRegistry(), fronts: map[*ranges.Node]*mqtt.Server{},
		mqtt: make([]string, nodes), apis: make([]string, nodes)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var ready sync.WaitGroup
	ready.Add(nodes)
	e.cluster = rangestest.Start(t, nodes, rangestest.Options{
		Coprocessors: map[kvpb.Keyspace]kvstore.CoprocessorFactory{
			kvpb.Keyspace_KEYSPACE_DIST: dist.New, kvpb.Keyspace_KEYSPACE_RETAIN: retain.New, kvpb.Keyspace_KEYSPACE_INBOX: inbox.New,
		},
		Services: func(g *grpc.Server, n *ranges.Node) {
			front, err := mqtt.New(mqtt.Config{
				ReceiverID: mqtt.NewReceiverID(n.GRPCAddr()),
				Listeners:  []listener.Config{{Kind: listener.TCP, Addr: "127.0.0.1:0"}},
				Dist:       dist.NewClient(n.Router()), Retain: retain.NewClient(n.Router()), Inbox: inbox.NewClient(n.Router()),
				Frontends: func() []string {
					var out []string
					if m := n.Membership(); m != nil {
						for _, mem := range m.Members() {
							out = append(out, mem.Meta.GRPC)
						}
					}
					return out
				},
				Logger: log,
			})
			if err != nil {
				t.Fatal(err)
			}
			front.RegisterService(g)
			bal := balancer.New(balancer.Config{Policy: balancer.DefaultPolicy(), Paused: true, Logger: log}, n)
			balancerpb.RegisterBalancerServer(g, balancer.NewService(bal))
			e.mu.Lock()
			e.fronts[n] = front
			e.mu.Unlock()
		},
		Started: func(i int, n *ranges.Node) {
			e.mu.Lock()
			front := e.fronts[n]
			e.mu.Unlock()
			if err := front.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { front.Close() })
			var reg prometheus.Registerer
			if i == 0 {
				reg = e.reg
			}
			own := n.GRPCAddr()
			srv, err := api.New(api.Config{Addr: "127.0.0.1:0", Token: testToken, Broker: front,
				StoreAddr: func() (string, error) { return own, nil }, Registerer: reg, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			e.mu.Lock()
			e.mqtt[i], e.apis[i] = front.Addrs()[0].String(), "http://"+srv.Addr().String()
			e.mu.Unlock()
			ready.Done()
		},
	})
	ready.Wait()
	return e
}

// call makes an API call on node i with the token and decodes the JSON
// answer into out (when not nil); it returns the status code.
func (e *env) call(i int, method, path string, body any, out any) int {
	e.t.Helper()
	return e.callWith(i, method, path, body, out, testToken)
}

func (e *env) callWith(i int, method, path string, body any, out any, token string) int {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.apis[i]+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode >= 400 {
		var apiErr api.Error
		if err := json.Unmarshal(raw, &apiErr); err != nil || apiErr.Error == "" {
			e.t.Errorf("%s %s: %d with a body that is not a JSON error: %q", method, path, resp.StatusCode, raw)
		}
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: %d, undecodable %q: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

func (e *env) want(code, got int, what string) {
	e.t.Helper()
	if got != code {
		e.t.Fatalf("%s: status %d, want %d", what, got, code)
	}
}

// client is an MQTT 5.0 client (Eclipse Paho) on a real connection.
type client struct {
	c    *paho.Client
	recv chan *paho.Publish
	// kicked gets the server's DISCONNECT.
	kicked chan *paho.Disconnect
}

// dial connects clientID to node i's frontend; expiry > 0 makes the
// session persistent, clean starts a new one.
func (e *env) dial(i int, clientID string, clean bool, expiry uint32) (*client, *paho.Connack) {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.mqtt[i])
	if err != nil {
		e.t.Fatal(err)
	}
	cl := &client{recv: make(chan *paho.Publish, 64), kicked: make(chan *paho.Disconnect, 1)}
	cl.c = paho.NewClient(paho.ClientConfig{ClientID: clientID, Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case cl.recv <- pr.Packet:
			default:
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case cl.kicked <- d:
			default:
			}
		},
		OnClientError: func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := cl.c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: clean, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		e.t.Fatalf("connect %s: %v", clientID, err)
	}
	e.t.Cleanup(func() { _ = cl.c.Disconnect(&paho.Disconnect{}) })
	return cl, ack
}

func (c *client) subscribe(t *testing.T, filter string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}}); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
}

func (c *client) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case p := <-c.recv:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return nil
	}
}

func (c *client) disconnect(t *testing.T) {
	t.Helper()
	if err := c.c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not end")
	}
}

// waitOffline waits until the API reports the session offline (the
// frontend detached it after the DISCONNECT).
func (e *env) waitOffline(clientID string) {
	e.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var s api.Session
		if e.call(0, "GET", "/api/v1/sessions/"+url.PathEscape(clientID), nil, &s) == 200 && !s.Online {
			return
		}
	}
	e.t.Fatalf("session %s still online after 10s", clientID)
}

// TestAPI runs every endpoint against a real two-store cluster with a
// frontend on each store; the calls go to node 0's API, the MQTT clients
// to either frontend.
func TestAPI(t *testing.T) {
	e := startEnv(t, 2)

	t.Run("publish reaches an MQTT subscriber on another frontend, with its 5.0 properties", func(t *testing.T) {
		sub, _ := e.dial(1, "api-sub", true, 0)
		sub.subscribe(t, "pub/#", 1)
		expiry, format := uint32(60), uint32(0)
		var res api.PublishResult
		e.want(200, e.call(0, "POST", "/api/v1/publish", api.Message{Topic: "pub/x", Payload: base64.StdEncoding.EncodeToString([]byte{0, 1, 2}),
			Encoding: "base64", QoS: 1, ContentType: "application/octet-stream", ResponseTopic: "reply/x",
			CorrelationData: base64.StdEncoding.EncodeToString([]byte("corr")), MessageExpiry: &expiry, PayloadFormat: &format,
			UserProperties: []api.UserProperty{{"k", "a"}, {"k", "b"}}}, &res), "publish")
		if res.Subscribers != 1 {
			t.Errorf("publish reached %d subscribers, want 1", res.Subscribers)
		}
		p := sub.next(t)
		if p.Topic != "pub/x" || !bytes.Equal(p.Payload, []byte{0, 1, 2}) || p.QoS != 1 || p.Properties.ContentType != "application/octet-stream" ||
			p.Properties.ResponseTopic != "reply/x" || string(p.Properties.CorrelationData) != "corr" || p.Properties.MessageExpiry == nil ||
			*p.Properties.MessageExpiry > 60 || len(p.Properties.User) != 2 || p.Properties.User[1].Value != "b" {
			t.Fatalf("received %+v (properties %+v)", p, p.Properties)
		}
		e.want(200, e.call(0, "POST", "/api/v1/publish", api.Message{Topic: "nobody/here", Payload: "x"}, &res), "publish to no one")
		if res.Subscribers != 0 {
			t.Errorf("publish to no subscriber: %d", res.Subscribers)
		}
	})

	t.Run("retained set, get, visible to a new MQTT subscriber, cleared", func(t *testing.T) {
		e.want(200, e.call(0, "PUT", "/api/v1/retained", api.Message{Topic: "ret/a", Payload: "hello", QoS: 1, ContentType: "text/plain"}, nil), "set retained")
		var m api.Message
		e.want(200, e.call(0, "GET", "/api/v1/retained?topic=ret/a", nil, &m), "get retained")
		if m.Payload != "hello" || m.Encoding != "utf8" || m.ContentType != "text/plain" || m.QoS != 1 {
			t.Errorf("retained %+v", m)
		}
		sub, _ := e.dial(1, "ret-sub", true, 0)
		sub.subscribe(t, "ret/#", 1)
		p := sub.next(t)
		if p.Topic != "ret/a" || string(p.Payload) != "hello" || !p.Retain || p.Properties.ContentType != "text/plain" {
			t.Errorf("new subscriber got %+v", p)
		}
		e.want(200, e.call(0, "PUT", "/api/v1/retained", api.Message{Topic: "ret/b", Payload: "two"}, nil), "set retained b")
		var page api.RetainedPage
		e.want(200, e.call(0, "GET", "/api/v1/retained?filter=ret/%23&limit=1", nil, &page), "retained page 1")
		if len(page.Messages) != 1 || page.NextCursor == "" {
			t.Fatalf("page 1: %+v", page)
		}
		var page2 api.RetainedPage
		e.want(200, e.call(0, "GET", "/api/v1/retained?filter=ret/%23&limit=1&cursor="+page.NextCursor, nil, &page2), "retained page 2")
		if len(page2.Messages) != 1 || page2.Messages[0].Topic == page.Messages[0].Topic {
			t.Fatalf("page 2: %+v after %+v", page2, page)
		}
		e.want(204, e.call(0, "DELETE", "/api/v1/retained?topic=ret/a", nil, nil), "clear retained")
		e.want(404, e.call(0, "GET", "/api/v1/retained?topic=ret/a", nil, nil), "get cleared retained")
	})

	t.Run("a subscription added by the API delivers after the client reconnects", func(t *testing.T) {
		c, _ := e.dial(1, "persist-1", true, 300)
		var s api.Session
		e.want(200, e.call(0, "GET", "/api/v1/sessions/persist-1", nil, &s), "inspect online")
		if !s.Online || !s.Persistent || s.Frontend != e.cluster.Nodes[1].GRPCAddr() || s.ExpirySeconds != 300 {
			t.Errorf("online session: %+v", s)
		}
		c.disconnect(t)
		e.waitOffline("persist-1")
		var added api.Subscription
		e.want(200, e.call(0, "POST", "/api/v1/sessions/persist-1/subscriptions", api.Subscription{Filter: "sub/+", QoS: 1}, &added), "subscribe")
		e.want(200, e.call(0, "POST", "/api/v1/sessions/persist-1/subscriptions", api.Subscription{Filter: "gone/+", QoS: 0}, nil), "subscribe 2")
		e.want(204, e.call(0, "DELETE", "/api/v1/sessions/persist-1/subscriptions?filter=gone/%2B", nil, nil), "unsubscribe")
		e.want(404, e.call(0, "DELETE", "/api/v1/sessions/persist-1/subscriptions?filter=gone/%2B", nil, nil), "unsubscribe again")
		var res api.PublishResult
		e.want(200, e.call(0, "POST", "/api/v1/publish", api.Message{Topic: "sub/1", Payload: "queued", QoS: 1}, &res), "publish to the offline session")
		e.want(200, e.call(0, "POST", "/api/v1/publish", api.Message{Topic: "gone/1", Payload: "not for it", QoS: 1}, nil), "publish to the removed one")
		if res.Subscribers != 1 {
			t.Errorf("publish to the inbox reached %d", res.Subscribers)
		}
		e.want(200, e.call(0, "GET", "/api/v1/sessions/persist-1", nil, &s), "inspect offline")
		if s.Online || s.QueuedQoS12 != 1 || len(s.Subscriptions) != 1 || s.Subscriptions[0].Filter != "sub/+" || s.ExpiresUnixMs == 0 {
			t.Errorf("offline session: %+v", s)
		}
		c2, ack := e.dial(0, "persist-1", false, 300)
		if !ack.SessionPresent {
			t.Fatal("the session is gone")
		}
		if p := c2.next(t); p.Topic != "sub/1" || string(p.Payload) != "queued" {
			t.Fatalf("after reconnect got %+v", p)
		}
		select {
		case p := <-c2.recv:
			t.Fatalf("a message of the removed subscription arrived: %+v", p)
		case <-time.After(200 * time.Millisecond):
		}
	})

	// The API is node 0's: the session is on its frontend, then on the
	// other one.
	for _, node := range []int{0, 1} {
		t.Run(fmt.Sprintf("a subscription added by the API to a session connected to node %d delivers at once", node), func(t *testing.T) {
			id, filter := fmt.Sprintf("live-%d", node), fmt.Sprintf("live%d/+", node)
			path := "/api/v1/sessions/" + id + "/subscriptions"
			e.want(200, e.call(0, "PUT", "/api/v1/retained", api.Message{Topic: fmt.Sprintf("live%d/kept", node), Payload: "kept", QoS: 1}, nil), "set retained")
			c, _ := e.dial(node, id, true, 300)
			e.want(400, e.call(0, "POST", path, api.Subscription{Filter: "live/#/bad", QoS: 1}, nil), "subscribe a bad filter")
			e.want(200, e.call(0, "POST", path, api.Subscription{Filter: filter, QoS: 1}, nil), "subscribe while connected")
			if p := c.next(t); p.Topic != fmt.Sprintf("live%d/kept", node) || !p.Retain {
				t.Fatalf("first message %+v, want the retained one", p)
			}
			var res api.PublishResult
			e.want(200, e.call(0, "POST", "/api/v1/publish", api.Message{Topic: fmt.Sprintf("live%d/now", node), Payload: "now", QoS: 1}, &res), "publish")
			if p := c.next(t); p.Topic != fmt.Sprintf("live%d/now", node) || string(p.Payload) != "now" || p.Retain {
				t.Fatalf("got %+v, want the published message", p)
			}
			var s api.Session
			e.want(200, e.call(0, "GET", "/api/v1/sessions/"+id, nil, &s), "inspect")
			if !s.Online || len(s.Subscriptions) != 1 || s.Subscriptions[0].Filter != filter {
				t.Errorf("session after subscribe: %+v", s)
			}
			// Renewed with retain handling 1: not new, so no retained
			// message; the next message is the publish after it.
			e.want(200, e.call(0, "POST", path, api.Subscription{Filter: filter, QoS: 1, RetainHandling: 1}, nil), "renew")
			e.want(200, e.call(0, "POST", "/api/v1/publish", api.Message{Topic: fmt.Sprintf("live%d/again", node), Payload: "again", QoS: 1}, nil), "publish again")
			if p := c.next(t); p.Topic != fmt.Sprintf("live%d/again", node) {
				t.Fatalf("after the renewal got %+v, want the publish", p)
			}
			e.want(204, e.call(0, "DELETE", path+"?filter="+url.QueryEscape(filter), nil, nil), "unsubscribe while connected")
			e.want(404, e.call(0, "DELETE", path+"?filter="+url.QueryEscape(filter), nil, nil), "unsubscribe again")
			// A frontend's cached match may still name the inbox; what
			// the route queues is dropped at delivery (MQTT-3.10.4-2).
			e.want(200, e.call(0, "POST", "/api/v1/publish", api.Message{Topic: fmt.Sprintf("live%d/late", node), Payload: "late", QoS: 1}, nil), "publish after unsubscribe")
			select {
			case p := <-c.recv:
				t.Fatalf("a message arrived after the unsubscribe: %+v", p)
			case <-time.After(200 * time.Millisecond):
			}
			e.want(200, e.call(0, "GET", "/api/v1/sessions/"+id, nil, &s), "inspect after unsubscribe")
			if len(s.Subscriptions) != 0 {
				t.Errorf("session after unsubscribe: %+v", s)
			}
		})
	}

	t.Run("a connected clean session's subscriptions are not the API's", func(t *testing.T) {
		e.dial(1, "clean-live", true, 0)
		e.want(404, e.call(0, "POST", "/api/v1/sessions/clean-live/subscriptions", api.Subscription{Filter: "x/+"}, nil), "subscribe a clean session")
	})

	t.Run("kick closes a connection on another frontend", func(t *testing.T) {
		c, _ := e.dial(1, "kick-me", true, 0)
		var res api.KickResult
		e.want(200, e.call(0, "POST", "/api/v1/sessions/kick-me/kick", nil, &res), "kick")
		select {
		case d := <-c.kicked:
			if d.ReasonCode != 0x98 {
				t.Errorf("DISCONNECT reason %#x, want 0x98", d.ReasonCode)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no DISCONNECT within 10s")
		}
		select {
		case <-c.c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the connection is still open")
		}
		e.want(404, e.call(0, "POST", "/api/v1/sessions/kick-me/kick", nil, nil), "kick of a gone client")
	})

	t.Run("sessions list pages across a split inbox keyspace and the frontends' clean sessions", func(t *testing.T) {
		for i := range 7 {
			c, _ := e.dial(i%2, fmt.Sprintf("page-%d", i), true, 600)
			c.disconnect(t)
		}
		// Clean sessions, connected to either frontend, are listed among
		// them.
		e.dial(1, "page-2c", true, 0)
		e.dial(0, "page-7", true, 0)
		want := []string{"page-0", "page-1", "page-2", "page-2c", "page-3", "page-4", "page-5", "page-6", "page-7"}
		var clean api.Session
		e.want(200, e.call(0, "GET", "/api/v1/sessions/page-2c", nil, &clean), "inspect a clean session on another frontend")
		if clean.Persistent || !clean.Online || clean.Frontend != e.cluster.Nodes[1].GRPCAddr() || clean.Inflight == nil {
			t.Errorf("clean session: %+v", clean)
		}
		var split api.SplitResult
		e.want(200, e.call(0, "POST", "/api/v1/ranges/split", api.SplitRequest{Keyspace: "inbox", Key: "default\x00page-3\x00"}, &split), "split")
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 8 {
				t.Fatalf("more pages than sessions: %v", got)
			}
			var page api.SessionPage
			e.want(200, e.call(0, "GET", "/api/v1/sessions?prefix=page-&limit=2&cursor="+url.QueryEscape(cursor), nil, &page), "list")
			if len(page.Sessions) > 2 {
				t.Fatalf("page of %d", len(page.Sessions))
			}
			for _, s := range page.Sessions {
				got = append(got, s.ClientID)
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("listed %v, want %v", got, want)
		}
		var merged api.Range
		e.want(200, e.call(0, "POST", "/api/v1/ranges/merge", api.MergeRequest{Range: split.Left.ID}, &merged), "merge")
		if merged.ID != split.Left.ID || merged.End != split.Right.End {
			t.Errorf("merged %+v from %+v", merged, split)
		}
	})

	t.Run("cluster, ranges and balancer", func(t *testing.T) {
		var members []api.Member
		e.want(200, e.call(0, "GET", "/api/v1/cluster/members", nil, &members), "members")
		if len(members) != 2 {
			t.Errorf("members %+v", members)
		}
		var rs []api.Range
		e.want(200, e.call(0, "GET", "/api/v1/cluster/ranges", nil, &rs), "ranges")
		if len(rs) < 4 {
			t.Errorf("ranges %+v", rs)
		}
		var bs []api.BalancerStore
		e.want(200, e.call(0, "POST", "/api/v1/balancer/resume", nil, &bs), "resume")
		e.want(200, e.call(0, "GET", "/api/v1/balancer", nil, &bs), "balancer")
		if len(bs) != 2 || bs[0].Paused {
			t.Errorf("balancer after resume %+v", bs)
		}
		e.want(200, e.call(0, "POST", "/api/v1/balancer/pause", nil, &bs), "pause")
		if len(bs) != 2 || !bs[0].Paused || !bs[1].Paused {
			t.Errorf("balancer after pause %+v", bs)
		}
		e.want(404, e.call(0, "POST", "/api/v1/ranges/merge", api.MergeRequest{Range: 9999}, nil), "merge of an unknown range")
	})

	t.Run("user errors are 4xx with a JSON message", func(t *testing.T) {
		for _, c := range []struct {
			method, path string
			body         any
			code         int
		}{
			{"POST", "/api/v1/publish", "{not json", 400},
			{"POST", "/api/v1/publish", `{"topic":"a","payload":"x","color":"red"}`, 400},
			{"POST", "/api/v1/publish", api.Message{Topic: "a/+/b", Payload: "x"}, 400},
			{"POST", "/api/v1/publish", api.Message{Topic: "a", Payload: "x", QoS: 3}, 400},
			{"POST", "/api/v1/publish", api.Message{Topic: "a", Payload: "!!", Encoding: "base64"}, 400},
			{"POST", "/api/v1/publish", api.Message{Topic: "a", Payload: "x", Encoding: "rot13"}, 400},
			{"POST", "/api/v1/publish", api.Message{Topic: "$SYS/x", Payload: "x"}, 400},
			{"PUT", "/api/v1/retained", api.Message{Topic: "a", Payload: ""}, 400},
			{"GET", "/api/v1/retained", nil, 400},
			{"GET", "/api/v1/retained?topic=a/%2B", nil, 400},
			{"GET", "/api/v1/retained?filter=a/%23&limit=0", nil, 400},
			{"GET", "/api/v1/retained?filter=a/%23&cursor=*", nil, 400},
			{"GET", "/api/v1/sessions?limit=abc", nil, 400},
			{"GET", "/api/v1/sessions?tenant=a%00b", nil, 400},
			{"POST", "/api/v1/sessions/x/subscriptions", api.Subscription{Filter: "a/#/b"}, 400},
			{"POST", "/api/v1/sessions/x/subscriptions", api.Subscription{}, 400},
			{"POST", "/api/v1/ranges/split", api.SplitRequest{Key: "k"}, 400},
			{"POST", "/api/v1/ranges/merge", `{}`, 400},
			{"GET", "/api/v1/sessions/nobody", nil, 404},
			{"POST", "/api/v1/sessions/nobody/subscriptions", api.Subscription{Filter: "a"}, 404},
			{"GET", "/api/v1/nope", nil, 404},
			{"DELETE", "/api/v1/publish", nil, 405},
			{"PUT", "/api/v1/sessions", nil, 405},
		} {
			if got := e.call(0, c.method, c.path, c.body, nil); got != c.code {
				t.Errorf("%s %s %v: %d, want %d", c.method, c.path, c.body, got, c.code)
			}
		}
	})

	t.Run("a call without the right token is 401", func(t *testing.T) {
		for _, tok := range []string{"", "wrong", testToken + "x"} {
			e.want(401, e.callWith(0, "GET", "/api/v1/sessions", nil, nil, tok), fmt.Sprintf("token %q", tok))
		}
		e.want(200, e.callWith(0, "GET", "/api/openapi.json", nil, nil, ""), "the OpenAPI document")
	})

	t.Run("tenants are apart", func(t *testing.T) {
		e.want(200, e.call(0, "PUT", "/api/v1/retained?tenant=other", api.Message{Topic: "ten/a", Payload: "x"}, nil), "set in tenant other")
		e.want(404, e.call(0, "GET", "/api/v1/retained?topic=ten/a", nil, nil), "get in the default tenant")
		e.want(200, e.call(0, "GET", "/api/v1/retained?topic=ten/a&tenant=other", nil, nil), "get in tenant other")
		req, _ := http.NewRequest("GET", e.apis[0]+"/api/v1/retained?topic=ten/a", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set(api.TenantHeader, "other")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("get with the tenant header: %d", resp.StatusCode)
		}
	})

	t.Run("metrics count calls by route and code", func(t *testing.T) {
		families, err := e.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := map[string]bool{}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				found[f.GetName()+" "+labels["route"]+" "+labels["code"]] = true
			}
		}
		for _, k := range []string{"bifrost_api_requests_total /api/v1/publish 200", "bifrost_api_requests_total /api/v1/publish 400",
			"bifrost_api_requests_total /api/v1/sessions 401", "bifrost_api_request_duration_seconds /api/v1/publish "} {
			if !found[k] {
				t.Errorf("no series %q", k)
			}
		}
	})
}
