package mqtt

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// MQTT 5 enhanced authentication (section 4.12), for an auth provider that
// is an auth.EnhancedAuthenticator: the CONNECT's method and data start an
// exchange of AUTH packets that ends in the CONNACK; a client that
// connected so may re-authenticate later with AUTH packets between its
// others, which ends in an AUTH success or a DISCONNECT.

// maxAuthSteps bounds the exchange, so that a provider and a client that
// never conclude do not hold the connection.
const maxAuthSteps = 16

// errAuthProtocol: the client broke the exchange (CONNACK 0x82).
var errAuthProtocol = errors.New("enhanced authentication: protocol error")

// enhancedAuth is a connection's enhanced authentication: its method
// ("" for none), the credentials it connected with, and the next step of a
// re-authentication under way (0: none).
type enhancedAuth struct {
	r      *packet.Reader // the connection's, during CONNECT
	method string
	creds  auth.Credentials
	step   int
}

// authStep asks the provider for one step.
func (c *conn) authStep(step int, data []byte) (auth.AuthStep, error) {
	ea, ok := c.s.cfg.Auth.(auth.EnhancedAuthenticator)
	if !ok {
		return auth.AuthStep{}, auth.ErrBadAuthMethod
	}
	if step >= maxAuthSteps {
		return auth.AuthStep{}, auth.ErrNotAuthorized
	}
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.RequestTimeout)
	defer cancel()
	return ea.AuthStep(ctx, c.enhanced.creds, c.enhanced.method, step, data)
}

func (c *conn) sendAuth(code packet.ReasonCode, data []byte) {
	a := &packet.Auth{ReasonCode: code}
	a.Properties.AuthenticationMethod, a.Properties.AuthenticationData = c.enhanced.method, data
	c.send(a)
}

// connectEnhanced runs the CONNECT's exchange: it returns the client's
// identity and the data for the CONNACK.
func (c *conn) connectEnhanced(method string, data []byte, creds auth.Credentials) (auth.Identity, []byte, error) {
	c.enhanced.method, c.enhanced.creds = method, creds
	for step := 0; ; step++ {
		res, err := c.authStep(step, data)
		if err != nil {
			return auth.Identity{}, nil, err
		}
		if res.Done {
			return res.Identity, res.Data, nil
		}
		c.sendAuth(packet.ContinueAuthentication, res.Data)
		_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.ConnectTimeout))
		p, err := c.enhanced.r.ReadPacket(c.version)
		if err != nil {
			return auth.Identity{}, nil, fmt.Errorf("%w: %v", errAuthProtocol, err)
		}
		a, ok := p.(*packet.Auth)
		if !ok || a.ReasonCode != packet.ContinueAuthentication || a.Properties.AuthenticationMethod != method {
			return auth.Identity{}, nil, errAuthProtocol // MQTT-4.12.0-2, MQTT-4.12.0-3
		}
		data = a.Properties.AuthenticationData
	}
}

// onAuth handles an AUTH after CONNACK: a re-authentication.
func (c *conn) onAuth(p *packet.Auth) error {
	st := &c.enhanced
	switch {
	case st.method == "":
		return c.protocolError("MQTT-4.12.0-6: AUTH without an authentication method in CONNECT")
	case p.Properties.AuthenticationMethod != st.method:
		return c.protocolError("MQTT-4.12.1-1: AUTH with another authentication method")
	case p.ReasonCode == packet.ReAuthenticate && st.step == 0, p.ReasonCode == packet.ContinueAuthentication && st.step > 0:
	default:
		return c.protocolError("AUTH %s out of turn", p.ReasonCode)
	}
	res, err := c.authStep(st.step, p.Properties.AuthenticationData)
	if err != nil {
		st.step = 0
		return &disconnectError{code: packet.NotAuthorized, reason: "re-authentication failed"} // MQTT-4.12.1-2
	}
	if !res.Done {
		st.step++
		c.sendAuth(packet.ContinueAuthentication, res.Data)
		return nil
	}
	st.step = 0
	tenant := res.Identity.Tenant
	if tenant == "" {
		tenant = c.fallbackTenant() // as at CONNECT: the listener's
	}
	if tenant != c.id.Tenant || res.Identity.Username != c.id.Username {
		return &disconnectError{code: packet.NotAuthorized, reason: "re-authenticated as another user"}
	}
	c.sendAuth(packet.Success, res.Data)
	return nil
}

// fallbackTenant is the tenant of this connection's client when its
// authentication names none: its listener's, or auth.DefaultTenant.
func (c *conn) fallbackTenant() string {
	return auth.Credentials{ListenerTenant: c.info.Tenant}.FallbackTenant()
}
