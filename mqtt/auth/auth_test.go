package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hash is a cheap bcrypt hash, to keep the tests fast.
func hash(t testing.TB, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func writeFile(t testing.TB, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func creds(user, pw string) Credentials {
	return Credentials{ClientID: "c1", Username: user, HasUsername: true, Password: []byte(pw), HasPassword: true}
}

func TestUsersFileErrors(t *testing.T) {
	good := hash(t, "pw")
	for _, tc := range []struct {
		name, body, want string
	}{
		{"no colon", "# users\n\nalice " + good + "\n", "line 3: want username:bcrypt-hash"},
		{"empty name", "alice:" + good + "\n:" + good + "\n", "line 2: empty username"},
		{"spaces", " bob :" + good, `line 1: username "bob " has surrounding spaces`},
		{"duplicate", "alice:" + good + "\r\n# x\r\nalice:" + good + "\r\n", `line 3: user "alice" is already on line 1`},
		{"sha512", "alice:$6$salt$abcdef\n", `line 1: user "alice": mosquitto_passwd's`},
		{"pbkdf2", "alice:$7$101$abc$def\n", "not supported"},
		{"plain text", "alice:secret\n", `line 1: user "alice": password hash is not bcrypt`},
		{"truncated", "alice:" + good[:50] + "\n", "want 60"},
		{"bad cost", "alice:$2a$99" + good[6:] + "\n", "bad bcrypt hash"},
		{"not utf8", "\xffalice:" + good + "\n", "not UTF-8"},
	} {
		path := writeFile(t, tc.body)
		_, err := NewFile(FileConfig{UsersFile: path})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: NewFile = %v, want an error naming %s and %q", tc.name, err, path, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), good[7:]) {
			t.Errorf("%s: error quotes the hash: %v", tc.name, err)
		}
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := NewFile(FileConfig{UsersFile: missing}); err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestPasswords(t *testing.T) {
	// htpasswd -B writes $2y$, the same algorithm as Go's $2a$.
	bob := hash(t, "hunter2")
	bob2y := "$2y$" + bob[4:]
	path := writeFile(t, fmt.Sprintf("# test users\n\nalice:%s\nbob:%s\n", hash(t, "s3cret"), bob2y))
	a, err := NewFile(FileConfig{UsersFile: path})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		c    Credentials
		want error
	}{
		{"good", creds("alice", "s3cret"), nil},
		{"good 2y", creds("bob", "hunter2"), nil},
		{"wrong password", creds("alice", "S3cret"), ErrBadCredentials},
		{"other's password", creds("alice", "hunter2"), ErrBadCredentials},
		{"unknown user", creds("mallory", "s3cret"), ErrBadCredentials},
		{"empty username", creds("", "s3cret"), ErrBadCredentials},
		{"no password", Credentials{ClientID: "c", Username: "alice", HasUsername: true}, ErrBadCredentials},
		{"password only", Credentials{ClientID: "c", Password: []byte("s3cret"), HasPassword: true}, ErrBadCredentials},
		{"anonymous", Credentials{ClientID: "c"}, ErrNotAuthorized},
	} {
		id, err := a.Authenticate(ctx, tc.c)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
			continue
		}
		if err == nil {
			want := Identity{Tenant: DefaultTenant, ClientID: tc.c.ClientID, Username: tc.c.Username}
			if id != want {
				t.Errorf("%s: identity %+v, want %+v", tc.name, id, want)
			}
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.Authenticate(canceled, creds("alice", "s3cret")); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
}

// An unknown user's password is checked against a hash of the cost most
// users have, so it takes as long as a known user's.
func TestDummyHashCost(t *testing.T) {
	h5, err := bcrypt.GenerateFromPassword([]byte("x"), 5)
	if err != nil {
		t.Fatal(err)
	}
	h4 := hash(t, "y")
	path := writeFile(t, fmt.Sprintf("a:%s\nb:%s\nc:%s\n", h5, h5, h4))
	a, err := NewFile(FileConfig{UsersFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := bcrypt.Cost(a.(*fileAuth).dummy); err != nil || c != 5 {
		t.Fatalf("dummy cost %d (%v), want 5", c, err)
	}
}

func TestAnonymous(t *testing.T) {
	ctx := context.Background()
	path := writeFile(t, "alice:"+hash(t, "pw")+"\n")
	anon := Credentials{ClientID: "c9"}

	denied, err := NewFile(FileConfig{UsersFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := denied.Authenticate(ctx, anon); !errors.Is(err, ErrNotAuthorized) {
		t.Errorf("anonymous with users file: %v, want ErrNotAuthorized", err)
	}

	allowed, err := NewFile(FileConfig{UsersFile: path, AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := allowed.Authenticate(ctx, anon); err != nil || id != (Identity{Tenant: DefaultTenant, ClientID: "c9"}) {
		t.Errorf("anonymous allowed: %+v, %v", id, err)
	}
	// Allowing anonymous clients does not let a wrong password through.
	if _, err := allowed.Authenticate(ctx, creds("alice", "nope")); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("wrong password with anonymous allowed: %v", err)
	}

	// Without a users file everyone is anonymous: a claimed username
	// cannot be verified, so it is dropped.
	open, err := NewFile(FileConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := open.Authenticate(ctx, creds("root", "whatever")); err != nil || id.Username != "" || id.ClientID != "c1" {
		t.Errorf("no users file: %+v, %v", id, err)
	}

	all := AllowAll()
	if id, err := all.Authenticate(ctx, creds("root", "x")); err != nil || id != (Identity{Tenant: DefaultTenant, ClientID: "c1"}) {
		t.Errorf("AllowAll: %+v, %v", id, err)
	}
	if !all.Authorize(Identity{}, Subscribe, "#") {
		t.Error("AllowAll denied")
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword([]byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := bcrypt.Cost([]byte(h)); err != nil || c != HashCost {
		t.Fatalf("cost %d (%v), want %d", c, err, HashCost)
	}
	a, err := NewFile(FileConfig{UsersFile: writeFile(t, "carol:"+h+"\n")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(context.Background(), creds("carol", "correct horse")); err != nil {
		t.Fatalf("hash from HashPassword does not verify: %v", err)
	}
	if _, err := HashPassword(make([]byte, 73)); !errors.Is(err, bcrypt.ErrPasswordTooLong) {
		t.Fatalf("73-byte password: %v", err)
	}
}
