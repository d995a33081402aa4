package mqtt_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// Listeners of the tenant env, by index in Server.Addrs.
const (
	plainListener = 0 // tenant "default" unless the user has one
	edgeListener  = 1 // tenant "edge" unless the user has one
	proxyListener = 2 // behind a PROXY-protocol load balancer
)

// startTenantEnv runs two frontends whose users file puts alice in tenant
// acme, bob in beta and carol in her listener's tenant; anonymous clients
// are allowed, and so is everything else.
func startTenantEnv(t *testing.T) *env {
	t.Helper()
	return startTenantEnvWith(t, 2, nil)
}

// startTenantEnvWith is startTenantEnv with stores frontends, the user
// users dave (tenant delta) and erin (eps) too, and tune applied last.
func startTenantEnvWith(t *testing.T, stores int, tune func(*mqtt.Config)) *env {
	t.Helper()
	var users string
	for _, u := range []struct{ name, tenant string }{{"alice", ":acme"}, {"bob", ":beta"}, {"carol", ""}, {"dave", ":delta"}, {"erin", ":eps"}} {
		// The cheapest cost: a login check is then quick next to the
		// failed-login limiter's refill (one a second), also under -race.
		h, err := bcrypt.GenerateFromPassword([]byte(u.name+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		users += u.name + ":" + string(h) + u.tenant + "\n"
	}
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewFile(auth.FileConfig{UsersFile: path, AllowAnonymous: true, DefaultAllow: true})
	if err != nil {
		t.Fatal(err)
	}
	return startEnv(t, stores, func(c *mqtt.Config) {
		c.Auth = a
		c.Listeners = append(c.Listeners,
			listener.Config{Kind: listener.TCP, Addr: "127.0.0.1:0", Tenant: "edge"},
			listener.Config{Kind: listener.TCP, Addr: "127.0.0.1:0", ProxyProtocol: true})
		c.SysInterval = 100 * time.Millisecond
		c.NodeName = "n"
		if tune != nil {
			tune(c)
		}
	})
}

// tenantClient is a connect of a user ("" anonymous) with the options a
// test varies.
type tenantClient struct {
	addr, user, clientID string
	persistent           bool
	will                 *packet.Will
}

func (tc tenantClient) connect(t *testing.T) (*rawClient, *packet.Connack) {
	t.Helper()
	c := dialRaw(t, tc.addr, packet.V5)
	p := &packet.Connect{ClientID: tc.clientID, CleanStart: !tc.persistent, KeepAlive: 60, Will: tc.will}
	if tc.user != "" {
		p.Username, p.UsernameFlag, p.Password, p.PasswordFlag = tc.user, true, []byte(tc.user+"-pw"), true
	}
	if tc.persistent {
		p.Properties.SessionExpiryInterval, p.Properties.HasSessionExpiryInterval = 300, true
	}
	ack := c.connect(p)
	if ack.ReasonCode != 0 {
		t.Fatalf("%s as %q: CONNACK %s", tc.clientID, tc.user, ack.ReasonCode)
	}
	return c, ack
}

func (tc tenantClient) mustConnect(t *testing.T) *rawClient {
	t.Helper()
	c, _ := tc.connect(t)
	return c
}

// expectPayload reads the next PUBLISH and checks its topic and payload.
func expectPayload(t *testing.T, c *rawClient, topic, payload string) {
	t.Helper()
	p := c.nextPublish()
	if p.Topic != topic || string(p.Payload) != payload {
		t.Fatalf("got %q %q, want %q %q", p.Topic, p.Payload, topic, payload)
	}
}

// alive checks that the server still answers c (it was not kicked).
func alive(t *testing.T, c *rawClient) {
	t.Helper()
	c.send(&packet.Pingreq{})
	for {
		switch p := c.next().(type) {
		case *packet.Pingresp:
			return
		case *packet.Publish:
			t.Fatalf("unexpected PUBLISH %q %q", p.Topic, p.Payload)
		case nil:
			t.Fatal("connection closed")
		default:
			t.Fatalf("unexpected %s: %+v", p.Type(), p)
		}
	}
}

func pub(t *testing.T, c *rawClient, id uint16, topic, payload string, retain bool) {
	t.Helper()
	if code := c.publish(&packet.Publish{Topic: topic, QoS: 1, PacketID: id, Retain: retain, Payload: []byte(payload)}); code.IsError() {
		t.Fatalf("publish %s: %s", topic, code)
	}
}

// Two tenants with the same client IDs and topics never see each other's
// messages, retained messages, wills, shared subscriptions or sessions, on
// one frontend or across two; a client ID in one tenant does not take over
// the same client ID in another.
func TestTenantIsolation(t *testing.T) {
	e := startTenantEnv(t)
	fe0, fe1 := e.listenerAddr(0, plainListener), e.listenerAddr(1, plainListener)
	quiet := 300 * time.Millisecond

	// The same client ID, persistent, in both tenants, on two frontends
	// and on one: nobody is kicked, and bob's session is a new one.
	aliceDev := tenantClient{addr: fe0, user: "alice", clientID: "dev", persistent: true}
	a1 := aliceDev.mustConnect(t)
	b1, ack := tenantClient{addr: fe1, user: "bob", clientID: "dev", persistent: true}.connect(t)
	if ack.SessionPresent {
		t.Fatal("bob's CONNACK says a session is present: alice's session of the same client ID")
	}
	a1.subscribe(1, packet.Subscription{Filter: "t/#", QoS: 1})
	b1.subscribe(1, packet.Subscription{Filter: "t/#", QoS: 1})
	alive(t, a1)
	ap := tenantClient{addr: fe0, user: "alice", clientID: "pub"}.mustConnect(t)
	bp := tenantClient{addr: fe0, user: "bob", clientID: "pub"}.mustConnect(t)
	alive(t, ap)
	alive(t, b1)

	// messages.
	{
		pub(t, ap, 1, "t/x", "from-acme", false)
		expectPayload(t, a1, "t/x", "from-acme")
		pub(t, bp, 1, "t/x", "from-beta", false)
		expectPayload(t, b1, "t/x", "from-beta")
		a1.expectNone(quiet)
		b1.expectNone(quiet)
	}

	// retained.
	{
		pub(t, ap, 2, "r/x", "retained-acme", true)
		pub(t, bp, 2, "r/x", "retained-beta", true)
		for _, tc := range []struct{ user, want string }{{"alice", "retained-acme"}, {"bob", "retained-beta"}} {
			c := tenantClient{addr: fe1, user: tc.user, clientID: "rs"}.mustConnect(t)
			c.subscribe(1, packet.Subscription{Filter: "r/#", QoS: 1})
			expectPayload(t, c, "r/x", tc.want)
			c.expectNone(quiet)
		}
	}

	// offline persistent session.
	{
		a1.send(&packet.Disconnect{})
		a1.closed()
		pub(t, bp, 3, "t/x", "beta-while-alice-away", false)
		expectPayload(t, b1, "t/x", "beta-while-alice-away")
		pub(t, ap, 3, "t/x", "acme-while-alice-away", false)
		var ack *packet.Connack
		a1, ack = aliceDev.connect(t)
		if !ack.SessionPresent {
			t.Fatal("alice's session is gone")
		}
		expectPayload(t, a1, "t/x", "acme-while-alice-away")
		a1.expectNone(quiet)
		alive(t, b1)
	}

	// wills.
	{
		w := tenantClient{addr: fe1, user: "alice", clientID: "w",
			will: &packet.Will{Topic: "t/will", Payload: []byte("acme-will"), QoS: 1}}.mustConnect(t)
		w.nc.Close() // no DISCONNECT: the will goes out
		expectPayload(t, a1, "t/will", "acme-will")
		b1.expectNone(quiet)
	}

	// shared subscriptions.
	{
		as := tenantClient{addr: fe1, user: "alice", clientID: "s1"}.mustConnect(t)
		bs := tenantClient{addr: fe0, user: "bob", clientID: "s1"}.mustConnect(t)
		as.subscribe(1, packet.Subscription{Filter: "$share/g/s/x", QoS: 1})
		bs.subscribe(1, packet.Subscription{Filter: "$share/g/s/x", QoS: 1})
		for i := range 4 {
			pub(t, ap, uint16(10+i), "s/x", "acme-shared", false)
			expectPayload(t, as, "s/x", "acme-shared")
		}
		pub(t, bp, 10, "s/x", "beta-shared", false)
		expectPayload(t, bs, "s/x", "beta-shared")
		as.expectNone(quiet)
		bs.expectNone(quiet)
	}

	// listener tenant.
	{
		// Anonymous clients and users without a tenant are in their
		// listener's tenant; a user's own tenant wins on any listener.
		edge := e.listenerAddr(1, edgeListener)
		anonEdge := tenantClient{addr: edge, clientID: "dev"}.mustConnect(t)
		anonPlain := tenantClient{addr: fe1, clientID: "dev"}.mustConnect(t)
		anonEdge.subscribe(1, packet.Subscription{Filter: "t/#", QoS: 1})
		anonPlain.subscribe(1, packet.Subscription{Filter: "t/#", QoS: 1})
		carolEdge := tenantClient{addr: edge, user: "carol", clientID: "c"}.mustConnect(t)
		pub(t, carolEdge, 1, "t/x", "edge", false)
		expectPayload(t, anonEdge, "t/x", "edge")
		carolPlain := tenantClient{addr: fe0, user: "carol", clientID: "c"}.mustConnect(t)
		pub(t, carolPlain, 1, "t/x", "default", false)
		expectPayload(t, anonPlain, "t/x", "default")
		aliceEdge := tenantClient{addr: edge, user: "alice", clientID: "pub2"}.mustConnect(t)
		pub(t, aliceEdge, 1, "t/x", "acme-on-edge", false)
		expectPayload(t, a1, "t/x", "acme-on-edge")
		anonEdge.expectNone(quiet)
		anonPlain.expectNone(quiet)
		b1.expectNone(quiet)
	}

	// $SYS is the default tenant's.
	{
		// The broker's own figures count every tenant's clients: they are
		// the operator's, published in tenant default only.
		op := tenantClient{addr: fe0, clientID: "op"}.mustConnect(t)
		op.subscribe(1, packet.Subscription{Filter: "$SYS/#", QoS: 0})
		op.nextPublish()
		as := tenantClient{addr: fe0, user: "alice", clientID: "sys"}.mustConnect(t)
		as.subscribe(1, packet.Subscription{Filter: "$SYS/#", QoS: 0})
		as.expectNone(time.Second)
	}
}

// Behind a load balancer, the client address of the PROXY header is the
// one authentication sees: the login limiter charges the failures of one
// client to that client, not to every client of the load balancer.
func TestProxyProtocolAddressReachesAuth(t *testing.T) {
	e := startTenantEnv(t)
	addr := e.listenerAddr(0, proxyListener)
	dial := func(src string, user, pw string) packet.ReasonCode {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write([]byte("PROXY TCP4 " + src + " 198.51.100.1 40000 1883\r\n")); err != nil {
			t.Fatal(err)
		}
		c := newRawClient(t, nc, packet.V5)
		defer nc.Close()
		return c.connect(&packet.Connect{ClientID: "p", CleanStart: true, Username: user, UsernameFlag: true,
			Password: []byte(pw), PasswordFlag: true}).ReasonCode
	}
	// Fail from one client until even its good password is refused
	// unchecked (the limiter's burst is 10).
	limited := false
	for range 40 {
		if code := dial("203.0.113.7", "bob", "wrong"); code != packet.BadUserNameOrPassword {
			t.Fatalf("wrong password: %s", code)
		}
		if dial("203.0.113.7", "bob", "bob-pw") == packet.BadUserNameOrPassword {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("the failing client was never limited")
	}
	// Another client behind the same load balancer is not.
	if code := dial("203.0.113.8", "bob", "bob-pw"); code != 0 {
		t.Fatalf("another client of the load balancer: CONNACK %s; the limiter saw the load balancer's address", code)
	}
	// Without a header, the proxy listener refuses the connection.
	c := dialRaw(t, addr, packet.V5)
	c.send(&packet.Connect{ClientID: "np", CleanStart: true, ProtocolName: "MQTT", Version: packet.V5})
	if p := c.next(); p != nil {
		t.Fatalf("a CONNECT without a PROXY header got %s", p.Type())
	}
}

// tenantAuth is an authenticator of another shape than ours (a webhook's):
// it names the tenant the client ID says, "" for none, and records the
// address Authorize was given for each client ID.
type tenantAuth struct {
	auth.Authenticator
	remotes *sync.Map // client ID: string of Identity.Remote
}

func (a tenantAuth) Authorize(id auth.Identity, action auth.Action, topic string) bool {
	if id.Remote != nil {
		a.remotes.Store(id.ClientID, id.Remote.String())
	}
	return a.Authenticator.Authorize(id, action, topic)
}

func (a tenantAuth) Authenticate(ctx context.Context, c auth.Credentials) (auth.Identity, error) {
	id, err := a.Authenticator.Authenticate(ctx, c)
	tenant, _, _ := strings.Cut(c.ClientID, "/")
	id.Tenant = tenant
	return id, err
}

// Whatever the authenticator, the broker checks the tenant it names: one
// that is not a valid tenant name refuses the CONNECT, none at all is the
// listener's.
func TestTenantFromAnyAuthenticator(t *testing.T) {
	var remotes sync.Map
	e := startEnv(t, 1, func(c *mqtt.Config) {
		c.Auth = tenantAuth{auth.AllowAll(), &remotes}
		c.Listeners = append(c.Listeners, listener.Config{Kind: listener.TCP, Addr: "127.0.0.1:0", Tenant: "edge"},
			listener.Config{Kind: listener.TCP, Addr: "127.0.0.1:0", ProxyProtocol: true})
	})
	for _, id := range []string{"bad tenant/1", "a\x01b/1"} {
		c := dialRaw(t, e.addr(0), packet.V5)
		if ack := c.connect(&packet.Connect{ClientID: id, CleanStart: true}); ack.ReasonCode != packet.NotAuthorized {
			t.Fatalf("client %q: CONNACK %s, want not authorized", id, ack.ReasonCode)
		}
	}
	// "/x" names no tenant: on the edge listener the client is in edge,
	// with "edge/y", not with the default tenant's clients.
	edge := e.listenerAddr(0, 1)
	sub := tenantClient{addr: edge, clientID: "edge/sub"}.mustConnect(t)
	sub.subscribe(1, packet.Subscription{Filter: "t", QoS: 1})
	dflt := tenantClient{addr: e.addr(0), clientID: "default/sub"}.mustConnect(t)
	dflt.subscribe(1, packet.Subscription{Filter: "t", QoS: 1})
	p := tenantClient{addr: edge, clientID: "/x"}.mustConnect(t)
	pub(t, p, 1, "t", "no tenant named", false)
	expectPayload(t, sub, "t", "no tenant named")
	dflt.expectNone(300 * time.Millisecond)

	// Authorize (ACL checks) sees the client's address, a PROXY header's
	// behind a load balancer.
	nc, err := net.DialTimeout("tcp", e.listenerAddr(0, 2), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write([]byte("PROXY TCP6 2001:db8::9 2001:db8::1 4242 1883\r\n")); err != nil {
		t.Fatal(err)
	}
	pc := newRawClient(t, nc, packet.V5)
	if ack := pc.connect(&packet.Connect{ClientID: "edge/proxied", CleanStart: true}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	pc.subscribe(1, packet.Subscription{Filter: "t", QoS: 1})
	if got, _ := remotes.Load("edge/proxied"); got != "[2001:db8::9]:4242" {
		t.Fatalf("Authorize saw remote %v, want the PROXY header's [2001:db8::9]:4242", got)
	}
}

// A listener's tenant is checked with the frontend's config.
func TestListenerTenantValidated(t *testing.T) {
	cfg := mqtt.Config{ReceiverID: "r", Dist: dist.NewClient(nil), Retain: retain.NewClient(nil),
		Listeners: []listener.Config{{Kind: listener.TCP, Addr: "127.0.0.1:0", Tenant: "acme"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Listeners = append(cfg.Listeners, listener.Config{Kind: listener.WS, Addr: "127.0.0.1:0", Tenant: "ac/me"})
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "listener 1 (ws): tenant name \"ac/me\"") {
		t.Fatalf("Validate = %v", err)
	}
}
