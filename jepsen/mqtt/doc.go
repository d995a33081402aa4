// Package mqtt holds the harness's MQTT clients and workloads: a client
// connection on the server's own codec (mqtt/packet) that records what it
// sends and sees, and the workloads that check what an MQTT user is
// promised under faults.
//
// Every client operation is an invocation and a completion in the history
// like the KV clients': a CONNECT with its CONNACK (session present), a
// PUBLISH with its PUBACK or PUBCOMP. What a client sees without asking
// (a delivered PUBLISH with its QoS, DUP flag and packet ID, a SUBACK, the
// end of a connection with the server's reason code) is an observation
// (jepsen.Observer): an operation completed at once under the client's own
// observer process.
//
// Workloads:
//   - mqtt-queue (Queue, QueueChecker): persistent subscribers (3.1.1 clean
//     session 0, 5.0 with a session expiry) at QoS 1 and 2, publishers of
//     numbered messages at QoS 1 and 2 on any frontend; lost, duplicated
//     and reordered messages;
//   - mqtt-takeover (Takeover, TakeoverChecker): client IDs taken over
//     through random frontends, one connection per ID;
//   - mqtt-retained (Retained): retained messages as registers (porcupine);
//   - mqtt-will (Will, WillChecker): wills published once, after their delay,
//     unless the client disconnected or resumed its session.
package mqtt
