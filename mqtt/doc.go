// Package mqtt is Bifrost's MQTT frontend: it holds client connections and
// nothing durable. It speaks MQTT 3.1, 3.1.1 and 5.0 (the codec is
// mqtt/packet) over the listeners of mqtt/listener, authenticates through
// mqtt/auth, and keeps every durable thing in the coprocessors: routes in
// dist, retained messages in retain.
//
// Delivery. A frontend registers one dist route per (tenant, subscription)
// for all of its sessions (mqtt/fanout keeps the sessions behind each
// route). A publish is matched through dist; each matched receiver is this
// frontend (delivered in-process), another frontend (the Frontend gRPC
// service, mqttpb), or an inbox. Match results are cached per (tenant,
// topic); a route change invalidates the tenant's cache here and, by a
// broadcast, on every other frontend before the SUBACK goes out, with a TTL
// as the backstop for a broadcast that did not arrive.
//
// Invariants:
//   - A SUBACK is sent only after the subscription's route is committed in
//     dist (two sessions asking for the same new route wait for the same
//     commit).
//   - A QoS 1 PUBACK and a QoS 2 PUBREC are sent only after the message was
//     handed to every matched receiver (and, if retained, committed in
//     retain).
//   - Messages of one publisher reach a subscriber in the order published
//     (MQTT-4.6.0-5): a connection dispatches its publishes one at a time.
//   - Sessions are transient here: a connection's subscriptions and
//     in-flight messages die with it. Persistent sessions live in the inbox
//     coprocessor (next step); until then CONNACK says session present 0 and
//     MQTT 5 clients are told a session expiry of 0.
package mqtt
