package auth

import "context"

// The auth provider plug-in is Authenticator: the users file and ACL
// (NewFile) and AllowAll are its built-in implementations, the HTTP webhook
// (NewWebhook) its remote one. An implementation that needs the whole
// request, or does I/O to decide, implements Checker too; the broker asks
// through Allowed, which prefers it.

// Request is one publish or subscribe a client asks for: a PUBLISH (or a
// CONNECT's will) or one filter of a SUBSCRIBE.
type Request struct {
	Action Action
	// Topic is a topic name for Publish, a topic filter for Subscribe.
	Topic string
	// QoS is the publish's QoS, or the subscription's maximum QoS.
	QoS byte
	// Retain is the publish's retain flag; false for Subscribe.
	Retain bool
}

// Checker is an Authenticator whose permission check wants the whole
// request and may block (a remote call). Check must return by ctx's end and
// fail closed: false on any error.
type Checker interface {
	Check(ctx context.Context, id Identity, r Request) bool
}

// Allowed reports whether a lets id do r: through Checker when a is one,
// else through Authorize.
func Allowed(ctx context.Context, a Authenticator, id Identity, r Request) bool {
	if c, ok := a.(Checker); ok {
		return c.Check(ctx, id, r)
	}
	return a.Authorize(id, r.Action, r.Topic)
}
