package packet

import (
	"bytes"
	"testing"
)

// benchPublish is what the broker sends a v5 subscriber: a topic, a
// subscription identifier, a user property and a 256-byte payload.
var benchPublish = &Publish{
	QoS: 1, PacketID: 42, Topic: "sensors/building-7/floor-3/room-12/temperature",
	Properties: Properties{
		SubscriptionIdentifier: []uint32{17},
		MessageExpiryInterval:  300, HasMessageExpiryInterval: true,
		UserProperties: []UserProperty{{"origin", "gateway-4"}},
	},
	Payload: bytes.Repeat([]byte("x"), 256),
}

func BenchmarkAppendPublish(b *testing.B) {
	for _, v := range []Version{V311, V5} {
		b.Run(v.String(), func(b *testing.B) {
			dst := make([]byte, 0, 1024)
			b.ReportAllocs()
			b.SetBytes(int64(Size(benchPublish, v)))
			for b.Loop() {
				var err error
				if dst, err = Append(dst[:0], benchPublish, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	for _, v := range []Version{V311, V5} {
		b.Run(v.String(), func(b *testing.B) {
			wire, err := Append(nil, benchPublish, v)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				if _, _, err := Decode(wire, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAppendPublishDoesNotAllocate holds the broker's fan-out path to zero
// allocations per subscriber.
func TestAppendPublishDoesNotAllocate(t *testing.T) {
	dst := make([]byte, 0, 1024)
	for _, v := range []Version{V31, V311, V5} {
		if n := testing.AllocsPerRun(100, func() { dst, _ = Append(dst[:0], benchPublish, v) }); n != 0 {
			t.Errorf("%s: Append of a PUBLISH allocates %.0f times", v, n)
		}
	}
}
