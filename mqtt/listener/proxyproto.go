package listener

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): a
// load balancer that terminates the client's TCP connection opens its own
// to the broker and first sends one header naming the client's address.
// The header is read before anything else, TLS included, under the
// listener's handshake deadline.
//
// Reads never go past the header: version 2 says its length up front, and
// version 1 is read a byte at a time up to its CRLF (at most 107 bytes), so
// the socket holds the first byte after it and a plain TCP connection can
// still be handed over as the bare socket (SyscallConn).

// Limits of the PROXY protocol reader.
const (
	// proxyV1MaxLen is the longest version 1 line, CRLF included (the
	// protocol's own bound).
	proxyV1MaxLen = 107
	// ProxyV2MaxLen bounds the address block and TLVs of a version 2
	// header (the protocol allows 65535); load balancers send tens of
	// bytes, a few hundred with TLVs.
	ProxyV2MaxLen = 4096
)

var (
	proxyV1Prefix = []byte("PROXY ")
	proxyV2Sig    = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// errNoProxyHeader: the connection did not start with a PROXY header.
var errNoProxyHeader = errors.New("proxy protocol: no PROXY header")

// proxyHeader is what a header says. Source nil: the proxy sent a header
// that carries no client address (v1 UNKNOWN, v2 LOCAL or an address
// family other than TCP over IPv4 or IPv6), and the connection's own peer
// address stands.
type proxyHeader struct {
	Source, Destination net.Addr
}

// readProxyHeader reads one version 1 or 2 header from r.
func readProxyHeader(r io.Reader) (proxyHeader, error) {
	// 8 bytes tell the versions apart: "PROXY " then at least "TCP4" or
	// "UNKNOWN", or the first 8 bytes of the 12-byte v2 signature.
	var start [8]byte
	if _, err := io.ReadFull(r, start[:]); err != nil {
		return proxyHeader{}, fmt.Errorf("proxy protocol: read header: %w", err)
	}
	switch {
	case bytes.Equal(start[:], proxyV2Sig[:8]):
		return readProxyV2(r)
	case bytes.HasPrefix(start[:], proxyV1Prefix):
		return readProxyV1(r, start[:])
	}
	return proxyHeader{}, errNoProxyHeader
}

func readProxyV1(r io.Reader, start []byte) (proxyHeader, error) {
	line := make([]byte, len(start), proxyV1MaxLen)
	copy(line, start)
	var b [1]byte
	for !bytes.HasSuffix(line, []byte("\r\n")) {
		if len(line) == proxyV1MaxLen {
			return proxyHeader{}, fmt.Errorf("proxy protocol v1: no CRLF within %d bytes", proxyV1MaxLen)
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return proxyHeader{}, fmt.Errorf("proxy protocol v1: read header: %w", err)
		}
		line = append(line, b[0])
	}
	return parseProxyV1(string(line[len(proxyV1Prefix) : len(line)-2]))
}

// parseProxyV1 parses the fields after "PROXY " of a line without its CRLF.
func parseProxyV1(s string) (proxyHeader, error) {
	f := strings.Split(s, " ")
	if f[0] == "UNKNOWN" {
		return proxyHeader{}, nil // the rest of the line is to be ignored
	}
	if len(f) != 5 {
		return proxyHeader{}, fmt.Errorf("proxy protocol v1: want 5 fields after PROXY, got %d", len(f))
	}
	var want4 bool
	switch f[0] {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return proxyHeader{}, fmt.Errorf("proxy protocol v1: unknown protocol %q", f[0])
	}
	var addrs [2]netip.AddrPort
	for i := range addrs {
		ip, err := netip.ParseAddr(f[1+i])
		if err != nil || ip.Zone() != "" || ip.Is4() != want4 {
			return proxyHeader{}, fmt.Errorf("proxy protocol v1: bad %s address %q", f[0], f[1+i])
		}
		port, err := parseProxyPort(f[3+i])
		if err != nil {
			return proxyHeader{}, err
		}
		addrs[i] = netip.AddrPortFrom(ip, port)
	}
	return proxyHeader{Source: net.TCPAddrFromAddrPort(addrs[0]), Destination: net.TCPAddrFromAddrPort(addrs[1])}, nil
}

// parseProxyPort parses a decimal port of 0 to 65535 without a sign or
// leading zeros (which strconv would take).
func parseProxyPort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || s[0] == '+' || len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("proxy protocol v1: bad port %q", s)
	}
	return uint16(p), nil
}

func readProxyV2(r io.Reader) (proxyHeader, error) {
	// The rest of the 16-byte fixed part: signature, version and command,
	// family and protocol, length.
	var rest [8]byte
	if _, err := io.ReadFull(r, rest[:]); err != nil {
		return proxyHeader{}, fmt.Errorf("proxy protocol v2: read header: %w", err)
	}
	if !bytes.Equal(rest[:4], proxyV2Sig[8:]) {
		return proxyHeader{}, errNoProxyHeader
	}
	verCmd, famProto := rest[4], rest[5]
	n := int(binary.BigEndian.Uint16(rest[6:]))
	if verCmd>>4 != 2 {
		return proxyHeader{}, fmt.Errorf("proxy protocol v2: version %d", verCmd>>4)
	}
	if n > ProxyV2MaxLen {
		return proxyHeader{}, fmt.Errorf("proxy protocol v2: %d bytes of addresses and TLVs, more than %d", n, ProxyV2MaxLen)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return proxyHeader{}, fmt.Errorf("proxy protocol v2: read addresses: %w", err)
	}
	switch verCmd & 0xF {
	case 0: // LOCAL: the proxy's own connection (a health check)
		return proxyHeader{}, nil
	case 1: // PROXY
	default:
		return proxyHeader{}, fmt.Errorf("proxy protocol v2: unknown command %d", verCmd&0xF)
	}
	var ipLen int
	switch famProto {
	case 0x11: // TCP over IPv4
		ipLen = 4
	case 0x21: // TCP over IPv6
		ipLen = 16
	default:
		// UNSPEC, UDP or a unix socket: no TCP client address to use; the
		// spec has the receiver keep the connection's own.
		return proxyHeader{}, nil
	}
	if n < 2*ipLen+4 {
		return proxyHeader{}, fmt.Errorf("proxy protocol v2: %d bytes cannot hold two %d-byte addresses and ports", n, ipLen)
	}
	src, _ := netip.AddrFromSlice(body[:ipLen])
	dst, _ := netip.AddrFromSlice(body[ipLen : 2*ipLen])
	sp := binary.BigEndian.Uint16(body[2*ipLen:])
	dp := binary.BigEndian.Uint16(body[2*ipLen+2:])
	return proxyHeader{
		Source:      net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, sp)),
		Destination: net.TCPAddrFromAddrPort(netip.AddrPortFrom(dst, dp)),
	}, nil
}
