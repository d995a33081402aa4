package packet

import (
	"bufio"
	"fmt"
	"io"
)

// readChunk is how much of a body the Reader allocates before the bytes
// arrive: a peer that declares a large remaining length must send it to
// make the Reader allocate it.
const readChunk = 64 << 10

// byteReader is what the Reader reads through: the header byte by byte,
// the body in one go.
type byteReader interface {
	io.Reader
	io.ByteReader
}

// Reader reads packets from a stream. It buffers (unless r already is an
// io.ByteReader such as a *bufio.Reader), so once r is given to a Reader it
// must be read only through it. A Reader is not safe for concurrent use.
type Reader struct {
	r   byteReader
	max uint64
}

// NewReader returns a Reader of r. maxPacketSize bounds the whole packet,
// fixed header included (MQTT 5 Maximum Packet Size); 0 means the protocol
// maximum, MaxPacketSize.
func NewReader(r io.Reader, maxPacketSize uint32) *Reader {
	br, ok := r.(byteReader)
	if !ok {
		br = bufio.NewReader(r)
	}
	m := uint64(maxPacketSize)
	if m == 0 {
		m = MaxPacketSize
	}
	return &Reader{r: br, max: m}
}

// ReadPacket reads one packet. v is the connection's version; v == 0 means
// CONNECT not yet received: then only CONNECT is accepted (anything else is
// a ProtocolError) and the CONNECT's own protocol level decides how it is
// decoded; an unknown protocol level or name gives an *Error with Code
// UnsupportedProtocolVersion and Version 0.
//
// A packet the rules refuse gives an *Error, its Code the reason the
// server gives the client. A remaining length that makes the packet larger
// than the maximum is refused with PacketTooLarge before the body is read
// or allocated. io.EOF comes back unchanged when the stream ends between
// packets; a stream that ends inside a packet gives io.ErrUnexpectedEOF;
// other read errors come back as they are.
//
// The packet's binary fields alias a buffer allocated for it alone, so the
// packet may be kept.
func (r *Reader) ReadPacket(v Version) (Packet, error) {
	if v != 0 && !v.Valid() {
		return nil, ErrVersion
	}
	b0, err := r.r.ReadByte()
	if err != nil {
		return nil, err
	}
	if e := checkFixed(b0, v); e != nil {
		return nil, e
	}
	var rl uint32
	n := 1
	for ; ; n++ {
		if n > 4 {
			return nil, &Error{Code: MalformedPacket, Msg: "MQTT-1.5.5 (3.1.1: 2.2.3): remaining length longer than 4 bytes", Type: Type(b0 >> 4), Version: v}
		}
		c, err := r.r.ReadByte()
		if err != nil {
			return nil, unexpected(err)
		}
		rl |= uint32(c&0x7f) << (7 * (n - 1))
		if c&0x80 == 0 {
			n++
			break
		}
	}
	if size := uint64(n) + uint64(rl); size > r.max {
		ev := v
		if v == 0 && Type(b0>>4) == CONNECT {
			// The CONNECT's protocol level, read from the start of its
			// body, so that a 5.0 client is answered CONNACK 0x95.
			ev = r.connectVersion(rl)
		}
		return nil, &Error{Code: PacketTooLarge, Type: Type(b0 >> 4), Version: ev,
			Msg: fmt.Sprintf("3.1.2.11.4: packet of %d bytes over the maximum packet size %d", size, r.max)}
	}
	body, err := r.body(int(rl))
	if err != nil {
		return nil, err
	}
	return decodeBody(b0, body, v)
}

// connectVersion reads the protocol name and level at the start of a
// CONNECT's body of rl bytes (7 bytes at most; the rest stays unread) and
// returns V5 for "MQTT" level 5, else 0.
func (r *Reader) connectVersion(rl uint32) Version {
	var head [7]byte
	if rl < uint32(len(head)) {
		return 0
	}
	if _, err := io.ReadFull(r.r, head[:]); err != nil {
		return 0
	}
	if string(head[:6]) == "\x00\x04MQTT" && Version(head[6]) == V5 {
		return V5
	}
	return 0
}

// body reads n bytes, growing the buffer as they arrive past readChunk.
func (r *Reader) body(n int) ([]byte, error) {
	buf := make([]byte, min(n, readChunk))
	if _, err := io.ReadFull(r.r, buf); err != nil {
		return nil, unexpected(err)
	}
	for len(buf) < n {
		have := len(buf)
		buf = append(buf, make([]byte, min(have, n-have))...)
		if _, err := io.ReadFull(r.r, buf[have:]); err != nil {
			return nil, unexpected(err)
		}
	}
	return buf, nil
}

// unexpected turns the end of the stream inside a packet into
// io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
