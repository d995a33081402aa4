package mqtt_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/bifrost-mq/bifrost/mqtt/listener"
)

// TestPahoV311 runs Eclipse Paho's MQTT 3.1.1 client (paho.mqtt.golang)
// against a frontend over TCP, TLS and WebSocket.
func TestPahoV311(t *testing.T) {
	e := startInteropEnv(t)
	for _, k := range []listener.Kind{listener.TCP, listener.TLS, listener.WS} {
		t.Run(string(k), func(t *testing.T) {
			topic := topicFor("paho311", k)
			u := e.url(k)

			t.Run("QoS012InOrder", func(t *testing.T) {
				// MQTT-4.6.0-6: one publisher's messages reach the
				// subscriber in the order published; each at the QoS it
				// was published with, under a QoS 2 subscription.
				sub := dialPaho3(t, u, e, "p3-order-sub-"+string(k), nil)
				sub.subscribe(topic+"/order", 2)
				pub := dialPaho3(t, u, e, "p3-order-pub-"+string(k), nil)
				const n = 30
				for i := 0; i < n; i++ {
					pub.publish(topic+"/order", byte(i%3), false, fmt.Sprintf("m%d", i))
				}
				for i := 0; i < n; i++ {
					m := sub.next()
					if string(m.Payload()) != fmt.Sprintf("m%d", i) || m.Qos() != byte(i%3) || m.Retained() {
						t.Fatalf("message %d: got %q QoS %d retained %v", i, m.Payload(), m.Qos(), m.Retained())
					}
				}
			})

			t.Run("Retained", func(t *testing.T) {
				pub := dialPaho3(t, u, e, "p3-ret-pub-"+string(k), nil)
				pub.publish(topic+"/ret", 1, true, "kept")
				// MQTT-3.3.1-6: a new subscription gets the last retained
				// message, with RETAIN 1 (MQTT-3.3.1-8).
				sub := dialPaho3(t, u, e, "p3-ret-sub-"+string(k), nil)
				sub.subscribe(topic+"/ret", 2)
				if m := sub.next(); string(m.Payload()) != "kept" || !m.Retained() || m.Qos() != 1 {
					t.Fatalf("retained: got %q retained %v QoS %d", m.Payload(), m.Retained(), m.Qos())
				}
				// MQTT-3.3.1-9: to an established subscription RETAIN is 0,
				// however it was published.
				pub.publish(topic+"/ret", 1, true, "newer")
				if m := sub.next(); string(m.Payload()) != "newer" || m.Retained() {
					t.Fatalf("live: got %q retained %v", m.Payload(), m.Retained())
				}
				// MQTT-3.3.1-10: an empty retained payload is forwarded as
				// normal and removes the retained message.
				pub.publish(topic+"/ret", 1, true, "")
				if m := sub.next(); len(m.Payload()) != 0 || m.Retained() {
					t.Fatalf("delete: got %q retained %v", m.Payload(), m.Retained())
				}
				late := dialPaho3(t, u, e, "p3-ret-late-"+string(k), nil)
				late.subscribe(topic+"/ret", 1)
				late.expectNone(300 * time.Millisecond)
			})

			t.Run("WillOnKilledConnection", func(t *testing.T) {
				sub := dialPaho3(t, u, e, "p3-will-sub-"+string(k), nil)
				sub.subscribe(topic+"/will/#", 1)
				// MQTT-3.14.4-3: after a DISCONNECT the will is discarded.
				clean := dialPaho3(t, u, e, "p3-will-clean-"+string(k), &will{topic: topic + "/will/clean", payload: "clean"})
				clean.c.Disconnect(250)
				// MQTT-3.1.2-8: a connection closed without DISCONNECT
				// has its will published. The client's own network
				// connection is closed under it.
				killed := dialPaho3(t, u, e, "p3-will-killed-"+string(k), &will{topic: topic + "/will/killed", payload: "gone"})
				killed.kill()
				m := sub.next()
				if m.Topic() != topic+"/will/killed" || string(m.Payload()) != "gone" || m.Qos() != 1 {
					t.Fatalf("will: got %s %q QoS %d", m.Topic(), m.Payload(), m.Qos())
				}
				sub.expectNone(300 * time.Millisecond)
			})
		})
	}
}

// will is the will message of a paho3Client.
type will struct{ topic, payload string }

// paho3Client is a paho.mqtt.golang client whose received messages land
// in recv.
type paho3Client struct {
	t    *testing.T
	c    pahov3.Client
	recv chan pahov3.Message
	stop chan struct{}

	mu sync.Mutex
	nc net.Conn // the network connection, for clients with a will
}

// dialPaho3 connects an MQTT 3.1.1 clean-session client that never
// reconnects, failing the test if it cannot; it is disconnected when the
// test ends. A client with a will dials through its own opener (Paho's
// WebSocket dialer for ws), so that kill can close the connection under it.
func dialPaho3(t *testing.T, u *url.URL, e *interopEnv, clientID string, w *will) *paho3Client {
	t.Helper()
	c := &paho3Client{t: t, recv: make(chan pahov3.Message, 256), stop: make(chan struct{})}
	o := pahov3.NewClientOptions().
		AddBroker(u.String()).
		SetClientID(clientID).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true).
		SetTLSConfig(e.tls.Clone())
	if w != nil {
		o.SetWill(w.topic, w.payload, 1, false)
		o.SetCustomOpenConnectionFn(func(u *url.URL, o pahov3.ClientOptions) (net.Conn, error) {
			var nc net.Conn
			var err error
			switch u.Scheme {
			case "tcp":
				nc, err = net.DialTimeout("tcp", u.Host, 5*time.Second)
			case "tls":
				nc, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", u.Host, o.TLSConfig)
			case "ws":
				nc, err = pahov3.NewWebsocket(u.String(), nil, 5*time.Second, nil, nil)
			default:
				err = fmt.Errorf("no opener for %s", u.Scheme)
			}
			if err == nil {
				c.mu.Lock()
				c.nc = nc
				c.mu.Unlock()
			}
			return nc, err
		})
	}
	c.c = pahov3.NewClient(o)
	tok := c.c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect to %s: %v", clientID, u, tok.Error())
	}
	t.Cleanup(func() {
		close(c.stop)
		c.c.Disconnect(250)
	})
	return c
}

func (c *paho3Client) subscribe(filter string, qos byte) {
	c.t.Helper()
	tok := c.c.Subscribe(filter, qos, func(_ pahov3.Client, m pahov3.Message) {
		select {
		case c.recv <- m:
		case <-c.stop:
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		c.t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	if granted := tok.(*pahov3.SubscribeToken).Result()[filter]; granted != qos {
		c.t.Fatalf("subscribe %s: granted QoS %d, want %d", filter, granted, qos)
	}
}

// publish publishes and waits for the QoS flow to complete (for QoS 0,
// for the packet to be written).
func (c *paho3Client) publish(topic string, qos byte, retained bool, payload string) {
	c.t.Helper()
	tok := c.c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		c.t.Fatalf("publish %s QoS %d: %v", topic, qos, tok.Error())
	}
}

// kill closes the client's network connection without a DISCONNECT.
func (c *paho3Client) kill() {
	c.t.Helper()
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc == nil {
		c.t.Fatal("kill: the client dialed no connection of its own")
	}
	nc.Close()
}

func (c *paho3Client) next() pahov3.Message {
	c.t.Helper()
	select {
	case m := <-c.recv:
		return m
	case <-time.After(10 * time.Second):
		c.t.Fatal("no message in 10s")
		return nil
	}
}

func (c *paho3Client) expectNone(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.recv:
		c.t.Fatalf("unexpected message %s %q", m.Topic(), m.Payload())
	case <-time.After(d):
	}
}
