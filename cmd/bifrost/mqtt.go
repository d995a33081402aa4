package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
	"github.com/bifrost-mq/bifrost/ranges"
)

// mqttFlags are the MQTT frontend's flags, shared by 'standalone' and
// 'frontend'. The ACL rules come only from the config file ([[acl]] tables).
type mqttFlags struct {
	tcp, tls, ws, wss           string
	cert, key, clientCA         string
	requireClientCert           bool
	maxPacketSize               uint
	maxKeepAlive                uint
	receiveMaximum, maxInflight uint
	maxQueued                   int
	maxQueuedBytes              uint
	maxSessionExpiry            uint
	replaceForeignSessions      bool
	sysInterval                 uint
	usersFile                   string
	allowAnonymous              bool
	defaultAllow                optionalBool
	acl                         []auth.Rule
	api                         apiFlags
	plugins                     pluginFlags
	certUsers                   []auth.CertUser
	proxyProtocol               string
	listenerTenants             string
}

func (m *mqttFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.tcp, "mqtt", ":1883", "MQTT over TCP listen address (empty: off)")
	fs.StringVar(&m.tls, "mqtt-tls", ":8883", "MQTT over TLS listen address; opened when --tls-cert is set (empty: off)")
	fs.StringVar(&m.ws, "mqtt-ws", ":8083", "MQTT over WebSocket listen address, path /mqtt (empty: off)")
	fs.StringVar(&m.wss, "mqtt-wss", ":8084", "MQTT over secure WebSocket listen address; opened when --tls-cert is set (empty: off)")
	fs.StringVar(&m.cert, "tls-cert", "", "PEM certificate file for the TLS and WSS listeners")
	fs.StringVar(&m.key, "tls-key", "", "PEM private key file for the TLS and WSS listeners")
	fs.StringVar(&m.clientCA, "tls-client-ca", "", "PEM CA file that verifies client certificates")
	fs.BoolVar(&m.requireClientCert, "tls-require-client-cert", false, "refuse TLS clients without a certificate signed by --tls-client-ca")
	fs.UintVar(&m.maxPacketSize, "mqtt-max-packet-size", 1<<20, "largest MQTT packet accepted, in bytes")
	fs.UintVar(&m.maxKeepAlive, "mqtt-max-keepalive", 0, "cap on a client's keep-alive in seconds: told to MQTT 5 clients, a 3.x client asking for more or for none is refused (CONNACK 2, as mosquitto does) (0: no cap)")
	fs.UintVar(&m.receiveMaximum, "mqtt-receive-maximum", 128, "inbound QoS 1/2 publishes a client may have unacknowledged")
	fs.UintVar(&m.maxInflight, "mqtt-max-inflight", 64, "outbound QoS 1/2 messages awaiting a client's acknowledgement")
	fs.IntVar(&m.maxQueued, "mqtt-max-queued", 1000, "messages queued per connection behind a full in-flight window")
	fs.UintVar(&m.maxQueuedBytes, "mqtt-max-queued-bytes", 8<<20, "byte budget of a connection: what the frontend holds for it (messages queued, packets its socket has not taken); past it a clean session's messages are dropped, a persistent session's wait in its inbox (at least 65536)")
	fs.UintVar(&m.maxSessionExpiry, "mqtt-max-session-expiry", 0, "cap on a persistent session's expiry in seconds, told to MQTT 5 clients (0: no cap)")
	fs.BoolVar(&m.replaceForeignSessions, "mqtt-replace-foreign-sessions", false, "a CONNECT whose client ID has a detached session of another user discards it and starts a fresh one (default: refused with CONNACK 0x87 / 5)")
	fs.UintVar(&m.sysInterval, "mqtt-sys-interval", 10, "seconds between publications of the $SYS/brokers/<node>/ topics (0: none)")
	fs.StringVar(&m.usersFile, "users-file", "", "file of username:bcrypt-hash lines; when set, clients must authenticate")
	fs.BoolVar(&m.allowAnonymous, "allow-anonymous", false, "with --users-file, also accept clients without a username")
	m.api.register(fs)
	m.plugins.register(fs)
	fs.StringVar(&m.proxyProtocol, "mqtt-proxy-protocol", "", "listeners behind a load balancer that sends the PROXY protocol (v1 or v2), comma-separated: tcp, tls, ws, wss; their connections must start with a PROXY header, whose client address auth, ACLs and logs then see")
	fs.StringVar(&m.listenerTenants, "mqtt-listener-tenant", "", "tenant of each listener's clients when authentication names none, as kind=tenant pairs, comma-separated (e.g. tls=acme,wss=acme); unlisted listeners: tenant \"default\"")
	fs.Var(&m.defaultAllow, "acl-default-allow", "allow what no [[acl]] rule of the config file decides (unset: deny when the config file has [[acl]] rules, as mosquitto does with an ACL file; allow when it has none)")
}

// optionalBool is a boolean flag that knows whether it was set.
type optionalBool struct {
	set, value bool
}

func (b *optionalBool) String() string {
	if b == nil || !b.set {
		return ""
	}
	return strconv.FormatBool(b.value)
}

func (b *optionalBool) Set(v string) error {
	x, err := strconv.ParseBool(v)
	if err != nil {
		return errors.New("want true or false")
	}
	b.set, b.value = true, x
	return nil
}

func (b *optionalBool) IsBoolFlag() bool { return true }

// or is the value if it was set, else def.
func (b optionalBool) or(def bool) bool {
	if b.set {
		return b.value
	}
	return def
}

// configFileTables takes the [[acl]], [[cert-user]], [tenant-defaults]
// and [tenants.<name>] tables out of a config file's settings.
func (m *mqttFlags) configFileTables(values map[string]any) error {
	if err := m.configFileCertUsers(values); err != nil {
		return err
	}
	if err := m.plugins.configFileSettings(values); err != nil {
		return err
	}
	list, _, err := takeTable[[]map[string]any](values, "acl", "[[acl]] tables")
	if err != nil {
		return err
	}
	for i, t := range list {
		var r auth.Rule
		for k, v := range t {
			var good bool
			switch k {
			case "allow":
				r.Allow, good = v.(bool)
			case "action":
				r.Action, good = v.(string)
			case "topic":
				r.Topic, good = v.(string)
			case "users":
				var vs []any
				if vs, good = v.([]any); good {
					for _, u := range vs {
						s, isStr := u.(string)
						good = good && isStr
						r.Users = append(r.Users, s)
					}
				}
			default:
				return fmt.Errorf("acl[%d]: unknown key %q (want allow, action, users, topic)", i, k)
			}
			if !good {
				return fmt.Errorf("acl[%d]: bad value for %s", i, k)
			}
		}
		m.acl = append(m.acl, r)
	}
	return nil
}

// configFileCertUsers takes the [[cert-user]] tables out of a config file's
// settings.
func (m *mqttFlags) configFileCertUsers(values map[string]any) error {
	list, _, err := takeTable[[]map[string]any](values, "cert-user", "[[cert-user]] tables")
	if err != nil {
		return err
	}
	for i, t := range list {
		var u auth.CertUser
		for k, v := range t {
			s, good := v.(string)
			switch k {
			case "common-name":
				u.CommonName = s
			case "organizational-unit":
				u.OrganizationalUnit = s
			case "user":
				u.User = s
			case "tenant":
				u.Tenant = s
			default:
				return fmt.Errorf("cert-user[%d]: unknown key %q (want common-name, organizational-unit, user, tenant)", i, k)
			}
			if !good {
				return fmt.Errorf("cert-user[%d]: %s must be a string", i, k)
			}
		}
		m.certUsers = append(m.certUsers, u)
	}
	return nil
}

// perListener parses the listener options of -mqtt-proxy-protocol and
// -mqtt-listener-tenant.
func (m *mqttFlags) perListener() (proxy map[listener.Kind]bool, tenants map[listener.Kind]string, err error) {
	kind := func(flagName, value, s string) (listener.Kind, error) {
		switch k := listener.Kind(strings.TrimSpace(s)); k {
		case listener.TCP, listener.TLS, listener.WS, listener.WSS:
			return k, nil
		}
		return "", fmt.Errorf("invalid value %q for -%s: unknown listener %q (want tcp, tls, ws or wss)", value, flagName, s)
	}
	proxy, tenants = map[listener.Kind]bool{}, map[listener.Kind]string{}
	for _, s := range splitList(m.proxyProtocol) {
		k, err := kind("mqtt-proxy-protocol", m.proxyProtocol, s)
		if err != nil {
			return nil, nil, err
		}
		proxy[k] = true
	}
	for _, s := range splitList(m.listenerTenants) {
		name, tenant, ok := strings.Cut(s, "=")
		if !ok {
			return nil, nil, fmt.Errorf("invalid value %q for -mqtt-listener-tenant: want kind=tenant pairs, got %q", m.listenerTenants, s)
		}
		k, err := kind("mqtt-listener-tenant", m.listenerTenants, name)
		if err != nil {
			return nil, nil, err
		}
		if _, dup := tenants[k]; dup {
			return nil, nil, fmt.Errorf("invalid value %q for -mqtt-listener-tenant: %s is listed twice", m.listenerTenants, k)
		}
		if err := auth.ValidateTenant(tenant); err != nil {
			return nil, nil, fmt.Errorf("invalid value %q for -mqtt-listener-tenant: %s: %v", m.listenerTenants, k, err)
		}
		tenants[k] = tenant
	}
	return proxy, tenants, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func (m *mqttFlags) listeners(fs *flag.FlagSet) ([]listener.Config, error) {
	proxy, tenants, err := m.perListener()
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	hasCert := m.cert != "" || m.key != ""
	var out []listener.Config
	add := func(flagName, addr string, kind listener.Kind, tls bool) error {
		if addr == "" {
			return nil
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("invalid value %q for -%s: want host:port", addr, flagName)
		}
		if tls && !hasCert {
			if set[flagName] {
				return fmt.Errorf("-%s needs -tls-cert and -tls-key", flagName)
			}
			return nil
		}
		lc := listener.Config{Kind: kind, Addr: addr, ProxyProtocol: proxy[kind], Tenant: tenants[kind]}
		if tls {
			lc.CertFile, lc.KeyFile, lc.ClientCAFile, lc.RequireClientCert = m.cert, m.key, m.clientCA, m.requireClientCert
		}
		if err := lc.Validate(); err != nil {
			return fmt.Errorf("-%s: %v", flagName, err)
		}
		out = append(out, lc)
		return nil
	}
	for _, l := range []struct {
		name, addr string
		kind       listener.Kind
		tls        bool
	}{
		{"mqtt", m.tcp, listener.TCP, false}, {"mqtt-tls", m.tls, listener.TLS, true},
		{"mqtt-ws", m.ws, listener.WS, false}, {"mqtt-wss", m.wss, listener.WSS, true},
	} {
		if err := add(l.name, l.addr, l.kind, l.tls); err != nil {
			return nil, err
		}
	}
	// Naming a listener that is off is a mistake worth hearing of: the
	// operator expects a load balancer's or a tenant's clients there.
	open := map[listener.Kind]bool{}
	for _, lc := range out {
		open[lc.Kind] = true
	}
	for k := range proxy {
		if !open[k] {
			return nil, fmt.Errorf("-mqtt-proxy-protocol names the %s listener, which is not open", k)
		}
	}
	for k := range tenants {
		if !open[k] {
			return nil, fmt.Errorf("-mqtt-listener-tenant names the %s listener, which is not open", k)
		}
	}
	return out, nil
}

func (m *mqttFlags) authenticator() (auth.Authenticator, error) {
	if m.usersFile == "" && len(m.acl) == 0 && len(m.certUsers) == 0 {
		return auth.AllowAll(), nil
	}
	a, err := auth.NewFile(auth.FileConfig{
		UsersFile: m.usersFile, CertUsers: m.certUsers, AllowAnonymous: m.allowAnonymous || m.usersFile == "",
		ACL: m.acl, DefaultAllow: m.defaultAllow.or(len(m.acl) == 0),
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// frontendConfig validates the flags into a frontend's configuration; the
// caller fills in the receiver and the clients.
func (m *mqttFlags) frontendConfig(fs *flag.FlagSet, log *slog.Logger, reg prometheus.Registerer) (mqtt.Config, error) {
	ls, err := m.listeners(fs)
	if err != nil {
		return mqtt.Config{}, err
	}
	a, err := m.authenticator()
	if err != nil {
		return mqtt.Config{}, err
	}
	if a, err = m.plugins.authProvider(a, m.usersFile != "" || len(m.acl) > 0, log, reg); err != nil {
		return mqtt.Config{}, err
	}
	if m.maxPacketSize < 64 || m.maxPacketSize > 268435455 {
		return mqtt.Config{}, fmt.Errorf("invalid value %d for -mqtt-max-packet-size: want 64 to 268435455", m.maxPacketSize)
	}
	if m.maxKeepAlive > 65535 {
		return mqtt.Config{}, fmt.Errorf("invalid value %d for -mqtt-max-keepalive: want 0 to 65535", m.maxKeepAlive)
	}
	if m.receiveMaximum < 1 || m.receiveMaximum > 65535 {
		return mqtt.Config{}, fmt.Errorf("invalid value %d for -mqtt-receive-maximum: want 1 to 65535", m.receiveMaximum)
	}
	if m.maxInflight < 1 || m.maxInflight > 65535 {
		return mqtt.Config{}, fmt.Errorf("invalid value %d for -mqtt-max-inflight: want 1 to 65535", m.maxInflight)
	}
	if m.maxSessionExpiry > 4294967295 {
		return mqtt.Config{}, fmt.Errorf("invalid value %d for -mqtt-max-session-expiry: want 0 to 4294967295", m.maxSessionExpiry)
	}
	if m.sysInterval > 86400 {
		return mqtt.Config{}, fmt.Errorf("invalid value %d for -mqtt-sys-interval: want 0 to 86400 seconds", m.sysInterval)
	}
	sys := time.Duration(m.sysInterval) * time.Second
	if sys == 0 {
		sys = -1 // off
	}
	if m.maxQueued < 0 {
		return mqtt.Config{}, fmt.Errorf("invalid value %d for -mqtt-max-queued: must be 0 or more", m.maxQueued)
	}
	if m.maxQueuedBytes < 64<<10 || m.maxQueuedBytes > 1<<40 {
		return mqtt.Config{}, fmt.Errorf("invalid value %d for -mqtt-max-queued-bytes: want 65536 to 2^40", m.maxQueuedBytes)
	}
	ev, err := m.plugins.eventCollector(log, reg)
	if err != nil {
		return mqtt.Config{}, err
	}
	set, err := m.plugins.settingsProvider(log, reg)
	if err != nil {
		return mqtt.Config{}, err
	}
	return mqtt.Config{
		Listeners: ls, Auth: a,
		MaxPacketSize: uint32(m.maxPacketSize), MaxKeepAlive: uint16(m.maxKeepAlive),
		ReceiveMaximum: uint16(m.receiveMaximum), MaxInflight: uint16(m.maxInflight), MaxQueued: max(m.maxQueued, 1),
		MaxSessionExpiry: uint32(m.maxSessionExpiry), ReplaceForeignSessions: m.replaceForeignSessions, Logger: log, Registerer: reg,
		SysInterval: sys, Version: version(),
		MaxQueuedBytes: int(m.maxQueuedBytes),
		Events:         ev,
		Settings:       set,
	}, nil
}

// frontendAddrs lists the gRPC addresses of the members that run a frontend.
func frontendAddrs(m func() *ranges.Membership) func() []string {
	return func() []string {
		ms := m()
		if ms == nil {
			return nil
		}
		return ms.Frontends()
	}
}

// takeTable takes key out of a config file's settings as a T (what the TOML
// decoder makes of a table or an array of tables); found is false when the
// file has none, and a value of another shape is an error saying want.
func takeTable[T any](values map[string]any, key, want string) (v T, found bool, err error) {
	raw, ok := values[key]
	if !ok {
		return v, false, nil
	}
	delete(values, key)
	if v, ok = raw.(T); !ok {
		return v, true, fmt.Errorf("%s: want %s", key, want)
	}
	return v, true, nil
}
