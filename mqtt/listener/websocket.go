package listener

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"
)

// The WebSocket upgrade is done on the connection's own goroutine rather
// than by an http.Server: that keeps one accept path, one handshake
// deadline, one accept-error count and exact goroutine ownership for all
// four kinds. The listener serves nothing but the upgrade, so the little
// HTTP it needs is one request read and one response written.

const (
	// maxRequestBytes bounds the upgrade request (line and headers), as an
	// HTTP server's header limit does, so a client cannot make us buffer
	// an endless header.
	maxRequestBytes = 64 << 10

	// maxMQTTPacket is the largest MQTT packet: a type byte, four bytes of
	// remaining length, and the largest remaining length (MQTT 5.0 section
	// 2.1.4). websocket.NetConn lifts the read limit altogether; we put back
	// one no MQTT client is stopped by, since a client sends a packet or less
	// per message. The broker enforces its own, usually much smaller,
	// maximum packet size on the byte stream.
	maxMQTTPacket = 1 + 4 + 268_435_455
)

// subprotocols are the ones we speak, preferred first: "mqtt" is MQTT 3.1.1
// and 5.0's name (MQTT-6.0.0-3); "mqttv3.1" is what MQTT 3.1 clients offer.
var subprotocols = []string{"mqtt", "mqttv3.1"}

// upgrade reads the HTTP upgrade request from c and answers it: 404 on a
// path other than the configured one, 400 without an MQTT subprotocol, 101
// and a binary-message net.Conn otherwise.
func (l *Listener) upgrade(c net.Conn) (*websocket.Conn, net.Conn, error) {
	br := bufio.NewReader(io.LimitReader(c, maxRequestBytes))
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, fmt.Errorf("read upgrade request: %w", err)
	}
	w := &upgradeWriter{conn: c, rw: bufio.NewReadWriter(br, bufio.NewWriter(c)), header: http.Header{}}
	if req.URL.Path != l.cfg.Path {
		http.NotFound(w, req)
		w.finish()
		return nil, nil, fmt.Errorf("upgrade request for path %q, not %q", req.URL.Path, l.cfg.Path)
	}
	if !offersMQTT(req.Header) {
		http.Error(w, `WebSocket subprotocol "mqtt" required`, http.StatusBadRequest)
		w.finish()
		return nil, nil, fmt.Errorf("upgrade request offers no mqtt subprotocol (offered %q)", req.Header.Values("Sec-WebSocket-Protocol"))
	}
	wc, err := websocket.Accept(w, req, &websocket.AcceptOptions{
		Subprotocols: subprotocols,
		// Origin checks protect browsers' ambient credentials (cookies)
		// from cross-site pages. MQTT clients are not bound by CORS, and a
		// browser client authenticates in CONNECT, not with cookies, so an
		// Origin check would only refuse legitimate web dashboards.
		InsecureSkipVerify: true,
	})
	if err != nil {
		// Accept has written the error response.
		w.finish()
		return nil, nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	// Binary only: NetConn closes the WebSocket with 1003 on a text
	// message (MQTT-6.0.0-1). The stream view is what lets an MQTT packet
	// span messages and a message hold several packets (MQTT-6.0.0-2).
	// l.ctx, which Close cancels, bounds the conn's reads and writes.
	nc := websocket.NetConn(l.ctx, wc, websocket.MessageBinary)
	wc.SetReadLimit(maxMQTTPacket)
	return wc, nc, nil
}

func offersMQTT(h http.Header) bool {
	for _, v := range h.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			for _, want := range subprotocols {
				// Case-insensitive, as websocket.Accept selects.
				if strings.EqualFold(strings.TrimSpace(p), want) {
					return true
				}
			}
		}
	}
	return false
}

// upgradeWriter is the http.ResponseWriter and http.Hijacker
// websocket.Accept needs, writing straight to the connection. Responses
// other than 101 carry "Connection: close" and end when we close the
// connection, so they need no Content-Length.
type upgradeWriter struct {
	conn        net.Conn
	rw          *bufio.ReadWriter
	header      http.Header
	wroteHeader bool
	hijacked    bool
}

func (w *upgradeWriter) Header() http.Header { return w.header }

func (w *upgradeWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	if code != http.StatusSwitchingProtocols {
		w.header.Set("Connection", "close")
	}
	// Errors surface on finish's Flush or the first frame write.
	_, _ = fmt.Fprintf(w.rw, "HTTP/1.1 %03d %s\r\n", code, http.StatusText(code))
	_ = w.header.Write(w.rw)
	_, _ = w.rw.WriteString("\r\n")
}

func (w *upgradeWriter) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.rw.Write(p)
}

// Hijack flushes the 101 response, which the client waits for before it
// sends anything, and hands over the connection.
func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, errors.New("connection already hijacked")
	}
	w.hijacked = true
	if err := w.rw.Flush(); err != nil {
		return nil, nil, fmt.Errorf("flush upgrade response: %w", err)
	}
	return w.conn, w.rw, nil
}

// finish sends a refusal; the caller closes the connection.
func (w *upgradeWriter) finish() {
	if !w.hijacked {
		_ = w.rw.Flush()
	}
}
