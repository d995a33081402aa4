package mqtt

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

// TestLazyReaderKeepsEveryByte reads a stream written in random chunks with
// a random mix of ReadByte and Read, as the packet reader does, and checks
// that every byte arrives in order and that an idle reader holds no buffer.
func TestLazyReaderKeepsEveryByte(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	want := make([]byte, 200_000)
	for i := range want {
		want[i] = byte(rand.IntN(256))
	}
	go func() {
		rest := want
		for len(rest) > 0 {
			n := min(len(rest), 1+rand.IntN(9000))
			if _, err := client.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
		client.Close()
	}()
	l := newLazyReader(server)
	var got bytes.Buffer
	for {
		if rand.IntN(2) == 0 {
			b, err := l.ReadByte()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got.WriteByte(b)
			continue
		}
		p := make([]byte, 1+rand.IntN(5000))
		n, err := l.Read(p)
		got.Write(p[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("got %d bytes, want %d (or they differ)", got.Len(), len(want))
	}
	if l.buf != nil {
		t.Fatal("a drained reader still holds its buffer")
	}
}
