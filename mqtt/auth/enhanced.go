package auth

import (
	"context"
	"errors"
)

// ErrBadAuthMethod: the provider does not offer the client's MQTT 5
// authentication method (reason 0x8C).
var ErrBadAuthMethod = errors.New("auth: bad authentication method")

// EnhancedAuthenticator is an auth provider that offers MQTT 5 enhanced
// authentication (CONNECT and AUTH packets carrying an authentication
// method and data, MQTT 5 section 4.12). The broker asks it once per step,
// at CONNECT and at a re-authentication: step 0 with the data of the
// CONNECT (or of the AUTH that starts a re-authentication), then with the
// data of each AUTH the client answers with.
type EnhancedAuthenticator interface {
	// AuthStep returns Done with the client's identity, or data for the
	// client (an AUTH continue). Its errors are ErrBadAuthMethod,
	// ErrBadCredentials, ErrNotAuthorized, or ctx's.
	AuthStep(ctx context.Context, c Credentials, method string, step int, data []byte) (AuthStep, error)
}

// AuthStep is the answer to one step of enhanced authentication.
type AuthStep struct {
	// Done: authenticated as Identity; Data, if any, goes to the client in
	// the CONNACK (or the AUTH success of a re-authentication).
	Done     bool
	Identity Identity
	// Data for the client: in an AUTH continue when not Done.
	Data []byte
}
