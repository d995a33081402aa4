package auth

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// FileConfig is what the broker's TOML config holds: a users file and ACL
// rules. The zero FileConfig lets every client connect anonymously and
// denies everything.
type FileConfig struct {
	// UsersFile holds lines "username:bcrypt-hash" (htpasswd -B, or
	// HashPassword) or "username:bcrypt-hash:tenant", '#' comments and
	// blank lines. A user without a tenant is in its listener's tenant
	// (Credentials.FallbackTenant). Without a users file (and without
	// CertUsers) nobody can be authenticated: every client connects as
	// anonymous, its username dropped, whatever AllowAnonymous says.
	UsersFile string `toml:"users-file"`
	// CertUsers map verified TLS client certificates to users and tenants;
	// the first entry that matches a client's certificate authenticates it
	// without a password. A client whose certificate matches none
	// authenticates as without a certificate.
	CertUsers []CertUser `toml:"cert-user"`
	// AllowAnonymous lets clients without a username connect when there is
	// a users file; default false.
	AllowAnonymous bool `toml:"allow-anonymous"`
	// ACL rules are evaluated in order; the first that matches decides.
	ACL []Rule `toml:"acl"`
	// DefaultAllow decides when no rule matches; default false (deny).
	DefaultAllow bool `toml:"default-allow"`
}

// Rule allows or denies an action on the topics of a filter to some users.
type Rule struct {
	Allow bool `toml:"allow"`
	// Action is "publish", "subscribe" or "all".
	Action string `toml:"action"`
	// Users the rule applies to: usernames, "*" or "" for everyone,
	// "$anonymous" for clients without a username. An empty list is
	// everyone.
	Users []string `toml:"users"`
	// Topic is a topic filter; %c is replaced by the client ID and %u by the
	// username before matching. A publish matches when the filter matches
	// the topic. A subscribe matches an allow rule when the filter covers
	// the requested one (every topic the requested filter matches, the
	// rule's matches too), and a deny rule when the two overlap (some topic
	// matches both), so that neither can be sidestepped with a wider or
	// narrower filter.
	//
	// A rule using %c or %u does not match a client whose value for it is
	// empty (an anonymous client for %u). When the value contains '+', '#'
	// or '/', or would make the filter's first level a $-topic, the rule
	// fails closed: an allow rule does not match, a deny rule denies.
	Topic string `toml:"topic"`
}

// CertUser maps client certificates by subject to a user and a tenant.
type CertUser struct {
	// CommonName is the subject CN a certificate must have, or "*" for
	// any; required.
	CommonName string `toml:"common-name"`
	// OrganizationalUnit, when set, is an OU the certificate's subject
	// must list.
	OrganizationalUnit string `toml:"organizational-unit"`
	// User is the client's username; default the certificate's CN. A
	// CONNECT that names another username is refused (bad credentials);
	// its password, if any, is not checked.
	User string `toml:"user"`
	// Tenant is the client's tenant; default the listener's.
	Tenant string `toml:"tenant"`
}

func (u CertUser) validate() error {
	if u.CommonName == "" {
		return fmt.Errorf("common-name is required (\"*\" for any)")
	}
	if u.Tenant != "" {
		if err := ValidateTenant(u.Tenant); err != nil {
			return err
		}
	}
	if !utf8.ValidString(u.CommonName) || !utf8.ValidString(u.User) {
		return fmt.Errorf("common-name or user is not UTF-8")
	}
	return nil
}

// matches reports whether cert's subject is one u maps.
func (u CertUser) matches(cn string, ous []string) bool {
	if u.CommonName != "*" && u.CommonName != cn {
		return false
	}
	return u.OrganizationalUnit == "" || slices.Contains(ous, u.OrganizationalUnit)
}

// Validate checks the ACL rules and certificate users, naming the bad one
// by its index; the users file is read by NewFile.
func (c FileConfig) Validate() error {
	for i, u := range c.CertUsers {
		if err := u.validate(); err != nil {
			return fmt.Errorf("auth: cert-user[%d]: %w", i, err)
		}
	}
	for i, r := range c.ACL {
		if _, err := compileRule(r, c.hasUsers()); err != nil {
			return fmt.Errorf("auth: acl[%d]: %w", i, err)
		}
	}
	return nil
}

// hasUsers: some client can have a username.
func (c FileConfig) hasUsers() bool { return c.UsersFile != "" || len(c.CertUsers) > 0 }

// NewFile reads the users file and compiles the rules of cfg.
func NewFile(cfg FileConfig) (Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &fileAuth{allowAnonymous: cfg.AllowAnonymous, defaultAllow: cfg.DefaultAllow, limit: newLoginLimiter(),
		certUsers: slices.Clone(cfg.CertUsers)}
	for _, r := range cfg.ACL {
		cr, _ := compileRule(r, cfg.hasUsers()) // checked by Validate
		f.rules = append(f.rules, cr)
	}
	if cfg.UsersFile != "" {
		users, cost, err := readUsers(cfg.UsersFile)
		if err != nil {
			return nil, err
		}
		f.users = users
		// The hash an unknown user's password is checked against: bcrypt
		// time depends only on the cost, so use the one most users have.
		pw := make([]byte, 16)
		_, _ = rand.Read(pw)
		if f.dummy, err = bcrypt.GenerateFromPassword(pw, cost); err != nil {
			return nil, fmt.Errorf("auth: users-file %s: %w", cfg.UsersFile, err)
		}
	}
	return f, nil
}

// userEntry is a users file line.
type userEntry struct {
	hash   []byte // bcrypt
	tenant string // "" for the listener's
}

// readUsers parses a users file; cost is the most common bcrypt cost in it.
func readUsers(path string) (users map[string]userEntry, cost int, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("auth: users-file: %w", err)
	}
	users = map[string]userEntry{}
	lineOf := map[string]int{}
	costs := map[int]int{}
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		bad := func(format string, args ...any) error {
			return fmt.Errorf("auth: users-file %s line %d: %s", path, n, fmt.Sprintf(format, args...))
		}
		line = strings.TrimSpace(line) // also a CRLF file's '\r'
		if line == "" || line[0] == '#' {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok:
			return nil, 0, bad("want username:bcrypt-hash or username:bcrypt-hash:tenant")
		case name == "":
			return nil, 0, bad("empty username")
		case strings.TrimSpace(name) != name:
			return nil, 0, bad("username %q has surrounding spaces", name)
		case !utf8.ValidString(name):
			return nil, 0, bad("username is not UTF-8")
		case lineOf[name] != 0:
			return nil, 0, bad("user %q is already on line %d", name, lineOf[name])
		}
		// A bcrypt hash has no ':', so a third field is the tenant.
		hash, tenant, hasTenant := strings.Cut(hash, ":")
		if hasTenant {
			if err := ValidateTenant(tenant); err != nil {
				return nil, 0, bad("user %q: %v", name, err)
			}
		}
		// Never quote the hash: error messages end up in logs.
		c, err := checkHash(hash)
		if err != nil {
			return nil, 0, bad("user %q: %v", name, err)
		}
		users[name] = userEntry{hash: []byte(hash), tenant: tenant}
		lineOf[name] = n
		costs[c]++
	}
	cost = bcrypt.DefaultCost
	for c, k := range costs {
		if k > costs[cost] || k == costs[cost] && c > cost {
			cost = c
		}
	}
	return users, cost, nil
}

func checkHash(hash string) (cost int, err error) {
	if strings.HasPrefix(hash, "$6$") || strings.HasPrefix(hash, "$7$") {
		return 0, fmt.Errorf("mosquitto_passwd's SHA-512 and PBKDF2 hashes are not supported; hash with htpasswd -B or bifrost's passwd helper")
	}
	if !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") && !strings.HasPrefix(hash, "$2y$") {
		return 0, fmt.Errorf("password hash is not bcrypt ($2a$, $2b$ or $2y$)")
	}
	if len(hash) != 60 {
		return 0, fmt.Errorf("bcrypt hash is %d characters, want 60", len(hash))
	}
	cost, err = bcrypt.Cost([]byte(hash))
	if err != nil {
		return 0, fmt.Errorf("bad bcrypt hash: %w", err)
	}
	return cost, nil
}

type fileAuth struct {
	users          map[string]userEntry // nil without a users file
	certUsers      []CertUser
	dummy          []byte // checked for unknown users
	allowAnonymous bool
	rules          []rule
	defaultAllow   bool
	limit          *loginLimiter
}

func (f *fileAuth) Authenticate(ctx context.Context, c Credentials) (Identity, error) {
	if err := ctx.Err(); err != nil {
		return Identity{}, err
	}
	id := Identity{Tenant: c.FallbackTenant(), ClientID: c.ClientID}
	if cert := c.Certificate; cert != nil {
		for _, u := range f.certUsers {
			if !u.matches(cert.Subject.CommonName, cert.Subject.OrganizationalUnit) {
				continue
			}
			id.Username = cmp.Or(u.User, cert.Subject.CommonName)
			if u.Tenant != "" {
				id.Tenant = u.Tenant
			}
			if id.Username == "" || c.HasUsername && c.Username != id.Username {
				// A CN-less certificate names nobody; a username that
				// is not the certificate's is a confused client.
				return Identity{}, ErrBadCredentials
			}
			return id, nil
		}
	}
	if f.users == nil {
		return id, nil
	}
	if !c.HasUsername {
		// A password alone (MQTT 5 allows it) names nobody to check it for.
		if c.HasPassword {
			return Identity{}, ErrBadCredentials
		}
		if !f.allowAnonymous {
			return Identity{}, ErrNotAuthorized
		}
		return id, nil
	}
	src := sourceOf(c.Remote)
	if !f.limit.allowed(src) {
		return Identity{}, ErrBadCredentials // too many failures from there: no check (limit.go)
	}
	u, known := f.users[c.Username]
	hash := u.hash
	if !known {
		hash = f.dummy
	}
	// Always one bcrypt, whose final comparison is constant time, so an
	// unknown user or a missing password costs what a wrong one does.
	var err error
	if cerr := f.limit.check(ctx, func() { err = bcrypt.CompareHashAndPassword(hash, c.Password) }); cerr != nil {
		return Identity{}, cerr
	}
	if !known || !c.HasPassword || err != nil {
		f.limit.failed(src)
		return Identity{}, ErrBadCredentials
	}
	id.Username = c.Username
	if u.tenant != "" {
		id.Tenant = u.tenant
	}
	return id, nil
}

func (f *fileAuth) Authorize(id Identity, action Action, topic string) bool {
	switch action {
	case Publish:
		if !validTopicName(topic) {
			return false
		}
	case Subscribe:
		var ok bool
		if topic, ok = stripShare(topic); !ok || !validFilter(topic) {
			return false
		}
	default:
		return false
	}
	for i := range f.rules {
		r := &f.rules[i]
		if !r.appliesTo(id, action) {
			continue
		}
		switch r.check(id) {
		case expandSkip:
			continue
		case expandUnsafe:
			// Fail closed: the rule grants nothing, but still denies.
			if r.allow {
				continue
			}
			return false
		}
		p := pattern{levels: r.filter, vars: r.vars, clientID: id.ClientID, username: id.Username}
		var m bool
		switch {
		case action == Publish:
			m = matchTopic(&p, topic)
		case r.allow:
			// Every topic the subscription could receive must be allowed.
			m = covers(&p, topic)
		default:
			// Any topic it could receive being denied is enough, or
			// "news/#" would slip past a deny of "news/secret".
			m = overlaps(&p, topic)
		}
		if m {
			return r.allow
		}
	}
	return f.defaultAllow
}

// rule is a compiled Rule.
type rule struct {
	allow              bool
	publish, subscribe bool
	everyone           bool
	anonymous          bool
	users              map[string]bool
	filter             []string // levels, with %c and %u in them
	vars               []bool   // filter[i] holds %c or %u; nil: none does
	clientID, username bool     // whether the filter uses %c, %u
}

func compileRule(r Rule, haveUsers bool) (rule, error) {
	cr := rule{allow: r.Allow, users: map[string]bool{}}
	switch r.Action {
	case "publish":
		cr.publish = true
	case "subscribe":
		cr.subscribe = true
	case "all":
		cr.publish, cr.subscribe = true, true
	default:
		return rule{}, fmt.Errorf("unknown action %q (want publish, subscribe or all)", r.Action)
	}
	cr.everyone = len(r.Users) == 0
	for _, u := range r.Users {
		switch u {
		case "", "*":
			cr.everyone = true
		case "$anonymous":
			cr.anonymous = true
		default:
			if !haveUsers {
				// Without a users file every client is anonymous.
				return rule{}, fmt.Errorf("names user %q, but without a users-file nobody has a username", u)
			}
			cr.users[u] = true
		}
	}
	if r.Topic == "" {
		return rule{}, fmt.Errorf("topic is required")
	}
	cr.clientID = strings.Contains(r.Topic, "%c")
	cr.username = strings.Contains(r.Topic, "%u")
	if cr.username && !haveUsers {
		return rule{}, fmt.Errorf("topic %q uses %%u, but without a users-file nobody has a username", r.Topic)
	}
	if strings.HasPrefix(r.Topic, "$share/") || strings.HasPrefix(r.Topic, "$oshare/") {
		return rule{}, fmt.Errorf("topic %q: rules apply to the filter after $share/<group>/, so they take none", r.Topic)
	}
	// Validate with sample values, the shape any safe value leaves alone.
	if sample := strings.NewReplacer("%c", "c", "%u", "u").Replace(r.Topic); !validFilter(sample) {
		return rule{}, fmt.Errorf("topic %q is not a valid MQTT topic filter", r.Topic)
	}
	cr.filter = strings.Split(r.Topic, "/")
	if cr.clientID || cr.username {
		cr.vars = make([]bool, len(cr.filter))
		for i, l := range cr.filter {
			cr.vars[i] = strings.Contains(l, "%c") || strings.Contains(l, "%u")
		}
	}
	return cr, nil
}

func (r *rule) appliesTo(id Identity, action Action) bool {
	if action == Publish && !r.publish || action == Subscribe && !r.subscribe {
		return false
	}
	if r.everyone {
		return true
	}
	if id.Username == "" {
		return r.anonymous
	}
	return r.users[id.Username]
}

type expansion int

const (
	expandOK     expansion = iota
	expandSkip             // a value is empty: the rule is not about this client
	expandUnsafe           // a value would change the filter's shape
)

// check says whether the rule's filter can take id's values for %c and %u.
func (r *rule) check(id Identity) expansion {
	if !r.clientID && !r.username {
		return expandOK
	}
	if r.clientID && id.ClientID == "" || r.username && id.Username == "" {
		return expandSkip
	}
	if r.clientID && !safeValue(id.ClientID) || r.username && !safeValue(id.Username) {
		return expandUnsafe
	}
	// "%c/#" for a client named "$SYS" would reach $SYS/#.
	p := pattern{levels: r.filter, vars: r.vars, clientID: id.ClientID, username: id.Username}
	if !strings.HasPrefix(r.filter[0], "$") && p.dollar() {
		return expandUnsafe
	}
	return expandOK
}

// safeValue reports whether a client ID or username can stand in one
// filter level as a literal.
func safeValue(v string) bool { return !strings.ContainsAny(v, "+#/\x00") }
