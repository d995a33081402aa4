package auth

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"
)

func TestValidateTenant(t *testing.T) {
	for _, ok := range []string{"default", "acme", "a", "Acme-Corp_2.eu", strings.Repeat("t", MaxTenantLen)} {
		if err := ValidateTenant(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for name, want := range map[string]string{
		"":                                  "empty",
		strings.Repeat("t", MaxTenantLen+1): "longer than 64",
		"acme corp":                         `byte 4 (' ')`,
		"a/b":                               `byte 1 ('/')`,
		"a\x00b":                            `byte 1`,
		"a:b":                               `byte 1 (':')`,
		"caf\xc3\xa9":                       "byte 3",
	} {
		if err := ValidateTenant(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", name, err, want)
		}
	}
}

// A users file line may end in ":tenant"; lines without one (every file
// written before) put the user in the listener's tenant.
func TestUsersFileTenants(t *testing.T) {
	path := writeFile(t, "alice:"+hash(t, "a")+":acme\nbob:"+hash(t, "b")+"\n")
	a, err := NewFile(FileConfig{UsersFile: path})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, pw, listener, want string
	}{
		{"alice", "a", "", "acme"},
		{"alice", "a", "edge", "acme"}, // the user's tenant wins
		{"bob", "b", "", DefaultTenant},
		{"bob", "b", "edge", "edge"},
	} {
		c := creds(tc.user, tc.pw)
		c.ListenerTenant = tc.listener
		id, err := a.Authenticate(context.Background(), c)
		if err != nil || id.Tenant != tc.want || id.Username != tc.user {
			t.Errorf("%s on listener tenant %q: %+v, %v; want tenant %q", tc.user, tc.listener, id, err, tc.want)
		}
	}
	for name, body := range map[string]string{
		"bad tenant":   "alice:" + hash(t, "a") + ":acme corp\n",
		"empty tenant": "alice:" + hash(t, "a") + ":\n",
		"fourth field": "alice:" + hash(t, "a") + ":acme:x\n",
	} {
		path := writeFile(t, body)
		if _, err := NewFile(FileConfig{UsersFile: path}); err == nil || !strings.Contains(err.Error(), `line 1: user "alice": tenant name`) {
			t.Errorf("%s: NewFile = %v", name, err)
		}
	}
}

func cert(cn string, ous ...string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ous}}
}

// Certificates map to users and tenants by CN and OU, first match wins,
// without a password; a certificate that matches nothing authenticates as
// no certificate would.
func TestCertUsers(t *testing.T) {
	path := writeFile(t, "carol:"+hash(t, "c")+":beta\n")
	a, err := NewFile(FileConfig{UsersFile: path, CertUsers: []CertUser{
		{CommonName: "gateway-1", User: "gw", Tenant: "acme"},
		{CommonName: "*", OrganizationalUnit: "beta-devices", Tenant: "beta"},
		{CommonName: "*", OrganizationalUnit: "lab"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		c        Credentials
		wantUser string
		want     string // tenant; "" refused
		wantErr  error
	}{
		{"exact cn", Credentials{Certificate: cert("gateway-1")}, "gw", "acme", nil},
		{"exact cn, its username", Credentials{Certificate: cert("gateway-1"), Username: "gw", HasUsername: true}, "gw", "acme", nil},
		{"exact cn, another username", Credentials{Certificate: cert("gateway-1"), Username: "carol", HasUsername: true}, "", "", ErrBadCredentials},
		{"ou", Credentials{Certificate: cert("sensor-9", "x", "beta-devices")}, "sensor-9", "beta", nil},
		{"ou, listener tenant", Credentials{Certificate: cert("probe", "lab"), ListenerTenant: "edge"}, "probe", "edge", nil},
		{"ou, no cn", Credentials{Certificate: cert("", "lab")}, "", "", ErrBadCredentials},
		{"no match: password", Credentials{Certificate: cert("laptop", "sales"), Username: "carol", HasUsername: true, Password: []byte("c"), HasPassword: true}, "carol", "beta", nil},
		{"no match, no password", Credentials{Certificate: cert("laptop", "sales")}, "", "", ErrNotAuthorized},
	} {
		id, err := a.Authenticate(context.Background(), tc.c)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s: %+v, %v; want %v", tc.name, id, err, tc.wantErr)
			}
			continue
		}
		if err != nil || id.Username != tc.wantUser || id.Tenant != tc.want {
			t.Errorf("%s: %+v, %v; want user %q tenant %q", tc.name, id, err, tc.wantUser, tc.want)
		}
	}

	// Certificate users count as users for ACL rules, without a users file.
	if _, err := NewFile(FileConfig{CertUsers: []CertUser{{CommonName: "gateway-1"}},
		ACL: []Rule{{Allow: true, Action: "all", Users: []string{"gateway-1"}, Topic: "%u/#"}}}); err != nil {
		t.Errorf("ACL naming a certificate user: %v", err)
	}
	for name, cu := range map[string]CertUser{
		"no cn":      {Tenant: "acme"},
		"bad tenant": {CommonName: "x", Tenant: "ac me"},
	} {
		if _, err := NewFile(FileConfig{CertUsers: []CertUser{{CommonName: "ok"}, cu}}); err == nil || !strings.Contains(err.Error(), "cert-user[1]") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// AllowAll puts clients in their listener's tenant.
func TestAllowAllTenant(t *testing.T) {
	for listener, want := range map[string]string{"": DefaultTenant, "edge": "edge"} {
		id, err := AllowAll().Authenticate(context.Background(), Credentials{ClientID: "c", ListenerTenant: listener})
		if err != nil || id.Tenant != want {
			t.Errorf("listener tenant %q: %+v, %v", listener, id, err)
		}
	}
}
