package main

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
)

func TestProxyAndTenantFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"standalone", "--mqtt-proxy-protocol", "tcp,udp"}, `unknown listener "udp"`},
		{[]string{"standalone", "--mqtt-proxy-protocol", "tls"}, "names the tls listener, which is not open"},
		{[]string{"standalone", "--mqtt-listener-tenant", "tcp"}, "want kind=tenant pairs"},
		{[]string{"standalone", "--mqtt-listener-tenant", "tcp=acme corp"}, "tenant name"},
		{[]string{"standalone", "--mqtt-listener-tenant", "tcp=a,tcp=b"}, "listed twice"},
		{[]string{"standalone", "--mqtt-listener-tenant", "ws=acme", "--mqtt-ws", ""}, "names the ws listener, which is not open"},
	} {
		code, _, stderr := runCLI(tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line naming %q", tc.args, code, stderr, tc.want)
		}
	}
}

// The flags reach the listener configs; [[cert-user]] tables reach the
// authenticator.
func TestProxyAndTenantFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bifrost.toml")
	body := "mqtt-proxy-protocol = \"tcp, ws\"\nmqtt-listener-tenant = \"ws=edge\"\n" +
		"[[cert-user]]\ncommon-name = \"*\"\norganizational-unit = \"acme-devices\"\ntenant = \"acme\"\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := newFlagSet("standalone", io.Discard)
	var m mqttFlags
	m.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, cfg, m.configFileTables); err != nil {
		t.Fatal(err)
	}
	ls, err := m.listeners(fs)
	if err != nil {
		t.Fatal(err)
	}
	got := map[listener.Kind]listener.Config{}
	for _, l := range ls {
		got[l.Kind] = l
	}
	if !got[listener.TCP].ProxyProtocol || !got[listener.WS].ProxyProtocol || got[listener.WS].Tenant != "edge" || got[listener.TCP].Tenant != "" {
		t.Errorf("listeners %+v", ls)
	}
	if len(m.certUsers) != 1 || m.certUsers[0] != (auth.CertUser{CommonName: "*", OrganizationalUnit: "acme-devices", Tenant: "acme"}) {
		t.Errorf("cert users %+v", m.certUsers)
	}
	a, err := m.authenticator()
	if err != nil {
		t.Fatal(err)
	}
	device := &x509.Certificate{Subject: pkix.Name{CommonName: "s1", OrganizationalUnit: []string{"acme-devices"}}}
	if id, err := a.Authenticate(context.Background(), auth.Credentials{Certificate: device}); err != nil || id.Tenant != "acme" || id.Username != "s1" {
		t.Errorf("device certificate: %+v, %v; want s1 of acme", id, err)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[[cert-user]]\ncn = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var m2 mqttFlags
	fs2 := newFlagSet("standalone", io.Discard)
	m2.register(fs2)
	if err := applyConfigFile(fs2, bad, m2.configFileTables); err == nil || !strings.Contains(err.Error(), `cert-user[0]: unknown key "cn"`) {
		t.Errorf("bad table: %v", err)
	}
}
