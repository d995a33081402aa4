package packet

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"testing/iotest"
)

// stream concatenates the fixtures of version v that Append produces,
// CONNECT first (read in the state before CONNECT).
func stream(v Version) (wire []byte, want []Packet) {
	for _, f := range fixtures() {
		if f.v == v && f.p.Type() == CONNECT {
			wire = append(wire, unhex(f.wire)...)
			want = append(want, f.p)
			break
		}
	}
	for _, f := range fixtures() {
		if f.v == v && f.p.Type() != CONNECT {
			wire = append(wire, unhex(f.wire)...)
			want = append(want, f.p)
		}
	}
	return wire, want
}

func TestReaderSmallReads(t *testing.T) {
	for _, v := range []Version{V31, V311, V5} {
		wire, want := stream(v)
		r := NewReader(iotest.OneByteReader(bytes.NewReader(wire)), 0)
		state := Version(0)
		for i, w := range want {
			p, err := r.ReadPacket(state)
			if err != nil {
				t.Fatalf("%s: packet %d: %v", v, i, err)
			}
			if !reflect.DeepEqual(p, w) {
				t.Fatalf("%s: packet %d:\n got %+v\nwant %+v", v, i, p, w)
			}
			state = v
		}
		if _, err := r.ReadPacket(v); err != io.EOF {
			t.Fatalf("%s: after the last packet: %v, want io.EOF", v, err)
		}
	}
}

func TestReaderUnexpectedEOF(t *testing.T) {
	wire := unhex("32 38 0003 612f62 0102 2b 0100 0200000e10 0300046a736f6e 0800057265706c79 090003010203 0b01 0b8001 230007" +
		" 2600016b000176 68656c6c6f")
	// Every cut inside the packet, in the header or in the body.
	for i := 1; i < len(wire); i++ {
		r := NewReader(iotest.HalfReader(bytes.NewReader(wire[:i])), 0)
		if _, err := r.ReadPacket(V5); err != io.ErrUnexpectedEOF {
			t.Fatalf("cut at %d: %v, want io.ErrUnexpectedEOF", i, err)
		}
	}
	// A cut after a whole packet is a clean end.
	r := NewReader(bytes.NewReader(append(unhex("c0 00"), wire[:3]...)), 0)
	if _, err := r.ReadPacket(V5); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadPacket(V5); err != io.ErrUnexpectedEOF {
		t.Fatalf("second packet cut: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(io.MultiReader(bytes.NewReader(unhex("30 05 00")), iotest.ErrReader(boom)), 0)
	if _, err := r.ReadPacket(V311); err != boom {
		t.Fatalf("%v, want boom", err)
	}
}

// headerOnly serves a fixed header and fails the test on any read past it.
type headerOnly struct {
	t      *testing.T
	header []byte
}

func (h *headerOnly) Read(p []byte) (int, error) {
	if len(h.header) == 0 {
		h.t.Fatal("read past the fixed header of an oversize packet")
	}
	n := copy(p, h.header)
	h.header = h.header[n:]
	return n, nil
}

func TestReaderRefusesOversizeBeforeReading(t *testing.T) {
	for _, max := range []uint32{16, 1024, 1 << 20} {
		for _, header := range []string{"30 ffffff7f", "30 8080 8001", "82 ffff7f"} {
			r := NewReader(&headerOnly{t: t, header: unhex(header)}, max)
			_, err := r.ReadPacket(V5)
			var e *Error
			if !errors.As(err, &e) || e.Code != PacketTooLarge {
				t.Errorf("max %d, header %s: %v, want PacketTooLarge", max, header, err)
			}
		}
	}
}

func TestReaderMaximumIsTheWholePacket(t *testing.T) {
	// A 10-byte PUBLISH: type, remaining length 8, topic "t", 5 bytes payload.
	wire := unhex("30 08 0001 74 6162636465")
	if _, err := NewReader(bytes.NewReader(wire), 10).ReadPacket(V311); err != nil {
		t.Fatalf("packet of exactly the maximum: %v", err)
	}
	_, err := NewReader(bytes.NewReader(wire), 9).ReadPacket(V311)
	var e *Error
	if !errors.As(err, &e) || e.Code != PacketTooLarge {
		t.Fatalf("packet one over the maximum: %v, want PacketTooLarge", err)
	}
}

func TestReaderLargeBody(t *testing.T) {
	want := &Publish{QoS: 1, PacketID: 1, Topic: "big", Payload: bytes.Repeat([]byte("0123456789"), 100_000)}
	wire, err := Append(nil, want, V5)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReader(iotest.HalfReader(bytes.NewReader(append(wire, wire...))), 0)
	for range 2 {
		p, err := r.ReadPacket(V5)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p, want) {
			t.Fatal("large packet differs")
		}
	}
	// A body cut short after several chunks.
	r = NewReader(bytes.NewReader(wire[:len(wire)-1]), 0)
	if _, err := r.ReadPacket(V5); err != io.ErrUnexpectedEOF {
		t.Fatalf("%v, want io.ErrUnexpectedEOF", err)
	}
}

// TestReaderKeepsPackets checks a packet read earlier is not overwritten by
// the next read (the Reader allocates per packet).
func TestReaderKeepsPackets(t *testing.T) {
	wire := unhex("30 04 0001 74 61 30 04 0001 74 62")
	r := NewReader(bytes.NewReader(wire), 0)
	p1, _ := r.ReadPacket(V311)
	if _, err := r.ReadPacket(V311); err != nil {
		t.Fatal(err)
	}
	if got := string(p1.(*Publish).Payload); got != "a" {
		t.Fatalf("first payload now %q", got)
	}
}

// TestDecodeAliasesCapped checks an append to a decoded field cannot
// overwrite the field after it in the buffer.
func TestDecodeAliasesCapped(t *testing.T) {
	wire := unhex("32 38 0003 612f62 0102 2b 0100 0200000e10 0300046a736f6e 0800057265706c79 090003010203 0b01 0b8001 230007" +
		" 2600016b000176 68656c6c6f")
	p, _, err := Decode(wire, V5)
	if err != nil {
		t.Fatal(err)
	}
	pub := p.(*Publish)
	_ = append(pub.Properties.CorrelationData, 0xee, 0xee, 0xee)
	if !bytes.Equal(wire, unhex("32 38 0003 612f62 0102 2b 0100 0200000e10 0300046a736f6e 0800057265706c79 090003010203 0b01 0b8001 230007"+
		" 2600016b000176 68656c6c6f")) {
		t.Fatal("append to CorrelationData wrote into the buffer")
	}
}

// TestReaderOversizeConnectKnowsItsVersion: a CONNECT over the maximum is
// refused before its body is read, but its protocol level is, so that a
// 5.0 client can be answered CONNACK 0x95.
func TestReaderOversizeConnectKnowsItsVersion(t *testing.T) {
	for _, c := range []struct {
		wire string
		want Version
	}{
		{"10 ff01 00044d515454 05", V5},
		{"10 ff01 00044d515454 04", 0},
		{"10 ff01 00064d5149736470 03", 0},
	} {
		_, err := NewReader(bytes.NewReader(unhex(c.wire)), 64).ReadPacket(0)
		var e *Error
		if !errors.As(err, &e) || e.Code != PacketTooLarge || e.Version != c.want {
			t.Errorf("%s: %v (version %v), want PacketTooLarge of version %v", c.wire, err, e.Version, c.want)
		}
	}
}
