package listener

import (
	"net"
	"syscall"
	"testing"
)

// TestSyscallConnOnlyPlainTCP: a handler gets the socket of a plain TCP
// connection, to wait on it without a goroutine, and not that of a TLS or
// WebSocket one, whose layers may hold read-ahead the socket does not show.
func TestSyscallConnOnlyPlainTCP(t *testing.T) {
	p := newPKI(t)
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			got := make(chan error, 1)
			l := start(t, p.config(kind), func(conn net.Conn, _ ConnInfo) {
				defer conn.Close()
				sc, ok := conn.(syscall.Conn)
				if !ok {
					got <- errNotPlain
					return
				}
				rc, err := sc.SyscallConn()
				if err == nil {
					err = rc.Control(func(uintptr) {})
				}
				got <- err
			}, nil)
			c := dial(t, l, p.clientTLS(false))
			defer c.Close()
			err := <-got
			if kind == TCP && err != nil {
				t.Fatalf("tcp: %v", err)
			}
			if kind != TCP && err == nil {
				t.Fatalf("%s: a socket under a %s layer", kind, kind)
			}
		})
	}
}
