package mqtt

import "github.com/bifrost-mq/bifrost/coprocessors/dist"

// Most connections never subscribe or publish at QoS 2: their maps are
// made at the first entry, not at CONNECT (48 B each when empty).

// awaitRel records a QoS 2 packet ID until its PUBREL.
func (c *conn) awaitRel(id uint16) {
	if c.awaitingRel == nil {
		c.awaitingRel = map[uint16]struct{}{}
	}
	c.awaitingRel[id] = struct{}{}
}

// addSub records a subscription.
func (c *conn) addSub(filter string, s dist.Subscription) {
	if c.subs == nil {
		c.subs = map[string]dist.Subscription{}
	}
	c.subs[filter] = s
}
