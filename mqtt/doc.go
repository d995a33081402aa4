// Package mqtt is Bifrost's MQTT frontend: it holds client connections and
// nothing durable. It speaks MQTT 3.1, 3.1.1 and 5.0 (the codec is
// mqtt/packet) over the listeners of mqtt/listener, authenticates through
// mqtt/auth, and keeps every durable thing in the coprocessors: routes in
// dist, retained messages in retain, persistent sessions in inbox.
//
// Delivery. A frontend registers one dist route per (tenant, subscription)
// for all of its transient sessions (mqtt/fanout keeps the sessions behind
// each route). A publish is matched through dist; each matched receiver is
// this frontend (delivered in-process), another frontend (the Frontend gRPC
// service, mqttpb), or an inbox (a persistent session: the message is
// inserted into it, and the frontend holding the session is notified).
// Match results are cached per (tenant, topic); a route change invalidates
// the tenant's cache here and, by a broadcast, on every other frontend
// before the SUBACK goes out, with a TTL as the backstop for a broadcast
// that did not arrive.
//
// Persistent sessions (session.go, inbox.go). A 3.x clean session 0, or an
// MQTT 5 session expiry above 0 (or clean start 0 finding a session), lives
// in the inbox coprocessor: subscriptions (routed in dist to the receiver
// "<incarnation>:<client ID>", kind inbox), the QoS 0 and QoS 1/2 queues,
// the will and its delay, the messages whose PUBREC came back, the
// client's unreleased QoS 2 packet IDs. The connection attached to it is
// the inbox's owner ("<receiver ID>|<nonce>"), recorded through Raft at
// CONNECT; a goroutine per connected session fetches after the last
// sequence number and commits what the client acknowledged.
//
// Invariants:
//   - A SUBACK is sent only after the subscription's route is committed in
//     dist (two sessions asking for the same new route wait for the same
//     commit); for a persistent session, after the subscription is also
//     recorded in its inbox.
//   - A QoS 1 PUBACK and a QoS 2 PUBREC are sent only after the message was
//     handed to every matched receiver: for an inbox, committed in it (and,
//     if retained, committed in retain).
//   - Messages of one publisher reach a subscriber in the order published
//     (MQTT-4.6.0-5): a connection dispatches its publishes one at a time,
//     and an inbox queue is delivered in sequence order.
//   - A persistent session's QoS 1/2 message leaves its inbox only when the
//     client acknowledged it (PUBACK, PUBCOMP); until then a reconnect, to
//     any frontend, resends it with DUP 1 and the same packet ID (derived
//     from its sequence number), or resends the PUBREL when its PUBREC had
//     come back, so a QoS 2 message is delivered once (MQTT-4.3.3,
//     MQTT-4.4.0-1).
//   - A session has at most one owner, the inbox's record. Attaching takes
//     the session from the previous owner, which is told to close (Kick,
//     DISCONNECT 0x8E) and waited for, so that its last acknowledgements
//     and in-flight state are in the inbox before the new connection reads
//     them. An owner that was not reached learns it lost the session from
//     its next commit or fetch (at most InboxPollInterval later) and
//     closes. A connection is in the frontend's owner set from before its
//     attach until after its detach; the inbox scheduler detaches only
//     sessions whose owner no frontend has (Owners, DeadOwners).
//   - A transient session's subscriptions and in-flight messages die with
//     its connection; a clean start discards a persistent session of the
//     same client ID (its inbox and routes) first (MQTT-3.1.2-4/6).
package mqtt
