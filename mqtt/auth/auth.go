// Package auth decides who may connect to the MQTT frontend and what each
// client may publish and subscribe to.
//
// Invariants:
//   - Authenticate reveals no more than ErrBadCredentials or
//     ErrNotAuthorized, and with a users file it runs bcrypt once per
//     attempt whether or not the user exists, so neither the answer nor its
//     timing tells which users exist.
//   - Authorize does no I/O and is safe for concurrent use: NewFile reads
//     and compiles everything once, and the result is immutable.
//   - A rule that substitutes the client ID (%c) or username (%u) never
//     grants access when the value could change the shape of its filter
//     (it contains '+', '#' or '/', or would turn the first level into a
//     $-topic), so a client cannot widen its access by its choice of ID or
//     username.
package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"golang.org/x/crypto/bcrypt"
)

// Errors of Authenticate, for the broker to map to CONNACK reason codes.
var (
	// ErrBadCredentials: unknown user, wrong or missing password (MQTT 5
	// reason 0x86, MQTT 3.1.1 return code 4).
	ErrBadCredentials = errors.New("auth: bad username or password")
	// ErrNotAuthorized: the client may not connect, e.g. anonymously (MQTT 5
	// reason 0x87, MQTT 3.1.1 return code 5).
	ErrNotAuthorized = errors.New("auth: not authorized")
)

// DefaultTenant is the tenant of a client when neither its authentication
// nor its listener names one.
const DefaultTenant = "default"

// Authenticator decides who may connect and what they may do. It is safe
// for concurrent use.
type Authenticator interface {
	// Authenticate checks a CONNECT's credentials. Its errors are
	// ErrBadCredentials, ErrNotAuthorized, or ctx's error when ctx ended
	// first.
	Authenticate(ctx context.Context, c Credentials) (Identity, error)
	// Authorize reports whether id may do action on topic: a topic name for
	// Publish, a topic filter for Subscribe (a shared subscription's
	// $share/<group>/ or $oshare/<group>/ prefix is allowed and ignored). An
	// invalid topic or filter is never authorized.
	Authorize(id Identity, action Action, topic string) bool
}

// Credentials are what a client presents in CONNECT and on the transport.
type Credentials struct {
	ClientID    string
	Username    string
	HasUsername bool
	Password    []byte
	HasPassword bool
	Remote      net.Addr
	// CommonName is the subject CN of a verified TLS client certificate, ""
	// if none.
	CommonName string
	// CertSubject is that certificate's whole subject (RFC 2253), "" if
	// none.
	CertSubject string
	// ProtocolVersion is the CONNECT's: 3 (3.1), 4 (3.1.1) or 5.
	ProtocolVersion byte
	// Certificate is the verified TLS client certificate, nil if none.
	Certificate *x509.Certificate
	// ListenerTenant is the tenant of the listener the client came in on,
	// "" for DefaultTenant: the tenant of a client whose authentication
	// names none (see FallbackTenant).
	ListenerTenant string
}

// FallbackTenant is the client's tenant when its authentication names none: the
// listener's, or DefaultTenant.
func (c Credentials) FallbackTenant() string {
	if c.ListenerTenant != "" {
		return c.ListenerTenant
	}
	return DefaultTenant
}

// Identity is an authenticated client. Username is "" for an anonymous
// client (no username, or none that could be verified).
type Identity struct {
	Tenant   string
	ClientID string
	Username string
	// Remote is the client's address (Credentials.Remote: behind a
	// PROXY-protocol load balancer, the client's), for Authorize to use;
	// the broker sets it.
	Remote net.Addr
}

// Action is what a client wants to do with a topic.
type Action int

// The actions. The zero Action is none, and never authorized.
const (
	Publish Action = iota + 1
	Subscribe
)

func (a Action) String() string {
	switch a {
	case Publish:
		return "publish"
	case Subscribe:
		return "subscribe"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// AllowAll lets every client connect, anonymously (Identity.Username "":
// a username nothing verified is not an identity, and must not own a
// session), as its listener's tenant (Credentials.FallbackTenant), and do
// anything.
func AllowAll() Authenticator { return allowAll{} }

type allowAll struct{}

func (allowAll) Authenticate(ctx context.Context, c Credentials) (Identity, error) {
	if err := ctx.Err(); err != nil {
		return Identity{}, err
	}
	return Identity{Tenant: c.FallbackTenant(), ClientID: c.ClientID}, nil
}

func (allowAll) Authorize(Identity, Action, string) bool { return true }

// HashCost is the bcrypt cost of HashPassword: bcrypt's default, about 50ms
// a check on current hardware, which every CONNECT with a password pays.
const HashCost = bcrypt.DefaultCost

// HashPassword returns the bcrypt hash of pw for a users file line
// "username:hash". bcrypt refuses passwords longer than 72 bytes.
func HashPassword(pw []byte) (string, error) {
	h, err := bcrypt.GenerateFromPassword(pw, HashCost)
	if err != nil {
		return "", fmt.Errorf("auth: hash password: %w", err)
	}
	return string(h), nil
}
