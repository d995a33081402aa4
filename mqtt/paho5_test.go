package mqtt_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// TestPahoV5 runs Eclipse Paho's MQTT 5 client (paho.golang, through
// autopaho, which brings its own TCP, TLS and WebSocket transports) against
// a frontend on every listener kind.
func TestPahoV5(t *testing.T) {
	e := startInteropEnv(t)
	for _, k := range interopKinds {
		t.Run(string(k), func(t *testing.T) {
			topic := topicFor("paho5", k)
			u := e.url(k)
			sub := dialPaho5(t, u, e, "paho5-sub-"+string(k))
			pub := dialPaho5(t, u, e, "paho5-pub-"+string(k))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			// Two subscriptions, each with its own identifier, granted the
			// QoS asked for (MQTT-3.9.3-1: one reason code per filter).
			sub.subscribe(ctx, 1, paho.SubscribeOptions{Topic: topic + "/one/+", QoS: 1})
			sub.subscribe(ctx, 2, paho.SubscribeOptions{Topic: topic + "/two/+", QoS: 2})

			// QoS 0, 1 and 2, delivered in the order published
			// (MQTT-4.6.0-5) at the lower of the published and the granted
			// QoS (MQTT-3.8.4-8), with the identifier of the subscription
			// that matched (MQTT-3.3.4-3) and the user properties unaltered
			// and in order (MQTT-3.3.2-17, -18), a repeated key included.
			type want struct {
				topic         string
				qos, deliverQ byte
				subID         int
			}
			cases := []want{
				{topic + "/two/x", 0, 0, 2},
				{topic + "/two/x", 1, 1, 2},
				{topic + "/two/x", 2, 2, 2},
				{topic + "/one/x", 2, 1, 1},
			}
			props := func(i int) paho.UserProperties {
				return paho.UserProperties{{Key: "seq", Value: fmt.Sprint(i)}, {Key: "k", Value: "a"}, {Key: "k", Value: "b"}}
			}
			for i, c := range cases {
				resp, err := pub.cm.Publish(ctx, &paho.Publish{Topic: c.topic, QoS: c.qos, Payload: []byte(fmt.Sprintf("m%d", i)),
					Properties: &paho.PublishProperties{User: props(i)}})
				if err != nil {
					t.Fatalf("publish %d (QoS %d): %v", i, c.qos, err)
				}
				if c.qos > 0 && resp.ReasonCode != 0 {
					t.Fatalf("publish %d (QoS %d): reason code %#x, want success", i, c.qos, resp.ReasonCode)
				}
			}
			for i, c := range cases {
				m := sub.next()
				if m.Topic != c.topic || string(m.Payload) != fmt.Sprintf("m%d", i) || m.QoS != c.deliverQ || m.Retain {
					t.Fatalf("message %d: got %s %q QoS %d retain %v, want %s %q QoS %d retain false",
						i, m.Topic, m.Payload, m.QoS, m.Retain, c.topic, fmt.Sprintf("m%d", i), c.deliverQ)
				}
				if id := subID(m); id != c.subID {
					t.Fatalf("message %d: subscription identifier %d, want %d", i, id, c.subID)
				}
				if got := userProps(m); !slices.Equal(got, props(i)) {
					t.Fatalf("message %d: user properties %v, want %v", i, got, props(i))
				}
			}

			// A retained message goes to a new subscription with RETAIN 1
			// (MQTT-3.3.1-9), with its properties (MQTT-3.3.2-17) and the
			// new subscription's identifier.
			retained := paho.UserProperties{{Key: "kept", Value: "yes"}}
			if _, err := pub.cm.Publish(ctx, &paho.Publish{Topic: topic + "/ret", QoS: 1, Retain: true, Payload: []byte("kept"),
				Properties: &paho.PublishProperties{User: retained}}); err != nil {
				t.Fatal(err)
			}
			sub.subscribe(ctx, 3, paho.SubscribeOptions{Topic: topic + "/ret", QoS: 2})
			m := sub.next()
			if m.Topic != topic+"/ret" || string(m.Payload) != "kept" || !m.Retain || m.QoS != 1 || subID(m) != 3 {
				t.Fatalf("retained: got %s %q retain %v QoS %d subscription %d", m.Topic, m.Payload, m.Retain, m.QoS, subID(m))
			}
			if got := userProps(m); !slices.Equal(got, retained) {
				t.Fatalf("retained: user properties %v, want %v", got, retained)
			}
			// An empty retained payload deletes it (MQTT-3.3.1-6) and is
			// forwarded live with RETAIN 0 (MQTT-3.3.1-12); subscribing
			// again, which sends what is retained (MQTT-3.3.1-9), then
			// brings nothing.
			if _, err := pub.cm.Publish(ctx, &paho.Publish{Topic: topic + "/ret", QoS: 1, Retain: true}); err != nil {
				t.Fatal(err)
			}
			if m := sub.next(); m.Retain || len(m.Payload) != 0 {
				t.Fatalf("retained delete: live copy retain %v payload %q", m.Retain, m.Payload)
			}
			sub.subscribe(ctx, 3, paho.SubscribeOptions{Topic: topic + "/ret", QoS: 2})
			sub.expectNone(300 * time.Millisecond)

			// After UNSUBSCRIBE nothing more arrives (MQTT-3.10.4-1, -2);
			// Bifrost says so in the PUBACK with 0x10.
			ua, err := sub.cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{topic + "/one/+", topic + "/two/+", topic + "/ret"}})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ua.Reasons, []byte{0, 0, 0}) {
				t.Fatalf("UNSUBACK reason codes %v, want all success", ua.Reasons)
			}
			resp, err := pub.cm.Publish(ctx, &paho.Publish{Topic: topic + "/two/x", QoS: 1, Payload: []byte("late")})
			if err != nil {
				t.Fatal(err)
			}
			if resp.ReasonCode != 0x10 {
				t.Fatalf("PUBACK after unsubscribe: %#x, want 0x10 (no matching subscribers)", resp.ReasonCode)
			}
			sub.expectNone(300 * time.Millisecond)
		})
	}
}

// paho5Client is an autopaho connection whose received messages land in
// recv.
type paho5Client struct {
	t    *testing.T
	cm   *autopaho.ConnectionManager
	recv chan *paho.Publish
}

// dialPaho5 connects a clean-start client, failing the test if it cannot;
// the connection is closed with a DISCONNECT when the test ends.
func dialPaho5(t *testing.T, u *url.URL, e *interopEnv, clientID string) *paho5Client {
	t.Helper()
	c := &paho5Client{t: t, recv: make(chan *paho.Publish, 256)}
	stop := make(chan struct{})
	connErr := make(chan error, 1)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        e.tls.Clone(),
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ConnectTimeout:                5 * time.Second,
		// A dropped connection must fail the test, not be papered over by
		// a reconnect.
		OnConnectionDown: func() bool { return false },
		OnConnectError: func(err error) {
			select {
			case connErr <- err:
			default:
			}
		},
		ClientConfig: paho.ClientConfig{
			ClientID: clientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){
				func(pr paho.PublishReceived) (bool, error) {
					select {
					case c.recv <- pr.Packet:
					case <-stop:
					}
					return true, nil
				},
			},
		},
	}
	cm, err := autopaho.NewConnection(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.cm = cm
	t.Cleanup(func() {
		close(stop)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cm.Disconnect(ctx); err != nil {
			t.Errorf("%s: disconnect: %v", clientID, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cm.AwaitConnection(ctx); err != nil {
		select {
		case cerr := <-connErr:
			t.Fatalf("%s: connect to %s: %v", clientID, u, cerr)
		default:
			t.Fatalf("%s: connect to %s: %v", clientID, u, err)
		}
	}
	return c
}

// subscribe sends one SUBSCRIBE with subscription identifier id and checks
// that the QoS asked for was granted.
func (c *paho5Client) subscribe(ctx context.Context, id int, opt paho.SubscribeOptions) {
	c.t.Helper()
	sa, err := c.cm.Subscribe(ctx, &paho.Subscribe{
		Properties:    &paho.SubscribeProperties{SubscriptionIdentifier: &id},
		Subscriptions: []paho.SubscribeOptions{opt},
	})
	if err != nil {
		c.t.Fatalf("subscribe %s: %v", opt.Topic, err)
	}
	if !bytes.Equal(sa.Reasons, []byte{opt.QoS}) {
		c.t.Fatalf("subscribe %s: SUBACK %v, want granted QoS %d", opt.Topic, sa.Reasons, opt.QoS)
	}
}

func (c *paho5Client) next() *paho.Publish {
	c.t.Helper()
	select {
	case m := <-c.recv:
		return m
	case <-time.After(10 * time.Second):
		c.t.Fatal("no message in 10s")
		return nil
	}
}

func (c *paho5Client) expectNone(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.recv:
		c.t.Fatalf("unexpected message %s %q", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

func subID(m *paho.Publish) int {
	if m.Properties == nil || m.Properties.SubscriptionIdentifier == nil {
		return 0
	}
	return *m.Properties.SubscriptionIdentifier
}

func userProps(m *paho.Publish) paho.UserProperties {
	if m.Properties == nil {
		return nil
	}
	return m.Properties.User
}
