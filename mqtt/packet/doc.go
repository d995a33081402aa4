// Package packet is the MQTT wire codec: it turns the control packets of
// MQTT 3.1 (protocol level 3, "MQIsdp"), 3.1.1 (level 4) and 5.0 (level 5)
// into Go values and back, for the server and for clients (tests, the load
// generator).
//
// Decoding is strict: whatever the specification says a receiver must treat
// as a Malformed Packet or a Protocol Error and can be seen in one packet is
// refused with an *Error whose Code is the MQTT 5 reason code the
// specification names, and whose message names the rule (MQTT-x.y.z-n, the
// 3.1.1 number where the two specifications differ and both apply). Rules
// that need the connection's state or the direction a packet travels
// (topic alias maximum, receive maximum, a client sending a subscription
// identifier, an AUTH without a method) and the syntax of topic names and filters
// (wildcards, $share) are the server's: in MQTT 5 an invalid filter is
// answered per filter in the SUBACK, not by closing the connection, so the
// codec must hand it over.
//
// Invariants:
//
//   - Nothing in decoding panics, whatever the input (fuzzed).
//   - Whatever Append encodes without error decodes to an equal packet,
//     except for the normalizations documented on the types (fields a
//     version lacks, a PUBLISH QoS 0 packet identifier). Append refuses what
//     Decode would refuse, so the server cannot send what it would reject;
//     the one exception is a CONNECT's protocol name and level, which
//     Append writes as given so that tests can send a wrong one.
//   - Decoded Payload, Password, Will payload, CorrelationData and
//     AuthenticationData alias the decoded buffer (capacity capped, so an
//     append never writes into a neighbouring field); strings are copied.
//     A zero-length binary field decodes as nil.
//   - A Reader allocates a fresh buffer per packet, so what it returns may be
//     kept; it never allocates for a body larger than its maximum packet size.
//   - Append of a PUBLISH does not allocate when dst has room.
//
// MQTT 5 properties live in Properties, one field per property. A numeric
// property is present when its Has* flag is set; a string or binary property
// is present when it is not empty (an empty one on the wire decodes as
// absent, which no property gives a meaning to).
package packet
