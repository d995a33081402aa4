package packet

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"
)

// checkDecode is the fuzz property: Decode never panics; it fails with an
// *Error, io.EOF or io.ErrUnexpectedEOF, or it succeeds and then the
// packet encodes (Size bytes) and decodes again to an equal packet; the
// Reader agrees with Decode.
func checkDecode(t *testing.T, data []byte, v Version) {
	p, n, err := Decode(data, v)
	rp, rerr := NewReader(bytes.NewReader(data), 0).ReadPacket(v)
	if err != nil {
		var e, re *Error
		switch {
		case errors.As(err, &e):
			if !errors.As(rerr, &re) || re.Code != e.Code {
				t.Fatalf("Decode: %v; ReadPacket: %v", err, rerr)
			}
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			if rerr != err {
				t.Fatalf("Decode: %v; ReadPacket: %v", err, rerr)
			}
		default:
			t.Fatalf("Decode: unexpected error %v", err)
		}
		return
	}
	if rerr != nil || !reflect.DeepEqual(rp, p) {
		t.Fatalf("Decode: %+v; ReadPacket: %+v, %v", p, rp, rerr)
	}
	if n <= 0 || n > len(data) {
		t.Fatalf("Decode took %d of %d bytes", n, len(data))
	}
	ev := v
	if c, ok := p.(*Connect); ok {
		ev = c.Version
	}
	out, err := Append(nil, p, ev)
	if err != nil {
		t.Fatalf("Append(%+v, %s) of a decoded packet: %v", p, ev, err)
	}
	if s := Size(p, ev); s != len(out) {
		t.Fatalf("Size = %d, Append wrote %d", s, len(out))
	}
	p2, n2, err := Decode(out, v)
	if err != nil {
		t.Fatalf("Decode(Append(%+v)) = %v\n% x", p, err, out)
	}
	if n2 != len(out) || !reflect.DeepEqual(p, p2) {
		t.Fatalf("re-decoded packet differs:\n got %+v\nwant %+v", p2, p)
	}
}

func FuzzDecodeV31(f *testing.F)  { f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b, V31) }) }
func FuzzDecodeV311(f *testing.F) { f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b, V311) }) }
func FuzzDecodeV5(f *testing.F)   { f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b, V5) }) }

// FuzzDecodeConnect fuzzes the state before CONNECT (version 0).
func FuzzDecodeConnect(f *testing.F) { f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b, 0) }) }

// TestWriteFuzzCorpus regenerates the seed corpus under testdata/fuzz from
// the fixtures and the malformed inputs. It writes only when
// PACKET_WRITE_CORPUS=1; otherwise it checks every fixture has its seed.
func TestWriteFuzzCorpus(t *testing.T) {
	write := os.Getenv("PACKET_WRITE_CORPUS") == "1"
	target := map[Version]string{V31: "FuzzDecodeV31", V311: "FuzzDecodeV311", V5: "FuzzDecodeV5", 0: "FuzzDecodeConnect"}
	unsafeChars := regexp.MustCompile(`[^a-zA-Z0-9.]+`)
	seed := func(fuzz, name string, wire []byte) {
		path := filepath.Join("testdata", "fuzz", fuzz, "seed-"+unsafeChars.ReplaceAllString(name, "_"))
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", wire)
		if write {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != content {
			t.Errorf("seed %s missing or stale (PACKET_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus)", path)
		}
	}
	for _, f := range fixtures() {
		wire := unhex(f.wire)
		seed(target[f.v], f.name, wire)
		if f.p.Type() == CONNECT {
			seed(target[0], f.name, wire)
		}
	}
	for _, b := range badInputs {
		seed(target[b.v], "bad "+b.name, unhex(b.wire))
	}
}
