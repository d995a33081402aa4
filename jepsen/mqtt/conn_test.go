package mqtt

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestConnQoS2Resend: a scripted server on loopback sends a QoS 2 PUBLISH,
// resends it with DUP and the same packet ID before PUBREL (the client must
// drop it: MQTT-4.3.3), then, over a new connection of the same client
// session, once more before releasing it; then ends with DISCONNECT 0x8E.
// The client hands the message to the application once, answers PUBREC
// each time, and reports the server's reason code.
func TestConnQoS2Resend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverDone := make(chan error, 1)
	go func() {
		serverDone <- func() error {
			for round := 0; round < 2; round++ {
				nc, err := ln.Accept()
				if err != nil {
					return err
				}
				defer nc.Close()
				r := packet.NewReader(nc, 0)
				if _, err := r.ReadPacket(0); err != nil {
					return err
				}
				send := func(p packet.Packet) {
					b, _ := packet.Append(nil, p, packet.V5)
					_, _ = nc.Write(b)
				}
				send(&packet.Connack{SessionPresent: round == 1})
				pub := &packet.Publish{QoS: 2, Topic: "q/p1", PacketID: 9, Payload: []byte("p1:1"), Dup: round == 1}
				send(pub)
				if p, err := r.ReadPacket(packet.V5); err != nil || p.Type() != packet.PUBREC {
					return err
				}
				if round == 0 {
					pub.Dup = true
					send(pub)
					if p, err := r.ReadPacket(packet.V5); err != nil || p.Type() != packet.PUBREC {
						return err
					}
					nc.Close()
					continue
				}
				send(&packet.Pubrel{PacketID: 9})
				if p, err := r.ReadPacket(packet.V5); err != nil || p.Type() != packet.PUBCOMP {
					return err
				}
				send(&packet.Disconnect{ReasonCode: packet.SessionTakenOver})
			}
			return nil
		}()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess := NewSession()
	got := make(chan Delivery, 10)
	o := ConnectOptions{ClientID: "sub", Version: packet.V5, SessionExpiry: 60}
	c, _, err := Dial(ctx, ln.Addr().String(), o, sess, func(d Delivery) { got <- d })
	if err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	c2, ack, err := Dial(ctx, ln.Addr().String(), o, sess, func(d Delivery) { got <- d })
	if err != nil {
		t.Fatal(err)
	}
	if !ack.SessionPresent {
		t.Fatal("session present not reported")
	}
	<-c2.Done()
	if err := <-serverDone; err != nil {
		t.Fatalf("server: %v", err)
	}
	if r := c2.Reason(); r != "disconnect 0x8e" {
		t.Errorf("reason %q, want disconnect 0x8e", r)
	}
	close(got)
	var apps, drops int
	for d := range got {
		if d.App {
			apps++
		} else {
			drops++
		}
	}
	if apps != 1 || drops != 2 {
		t.Errorf("application got %d, client dropped %d; want 1 and 2", apps, drops)
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if len(sess.unreleased) != 0 {
		t.Errorf("packet IDs still unreleased after PUBREL: %v", sess.unreleased)
	}
}

// TestConnPublishQoS2Resume: a scripted server takes a QoS 2 PUBLISH and
// drops the connection without PUBREC; the flight resumed on a new
// connection sends the PUBLISH again with DUP 1 and the same packet ID; the
// server then drops the connection after its PUBREC, and the flight,
// resumed once more, sends only the PUBREL.
func TestConnPublishQoS2Resume(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan packet.Packet, 10)
	serverDone := make(chan error, 1)
	go func() {
		serverDone <- func() error {
			for round := 0; round < 3; round++ {
				nc, err := ln.Accept()
				if err != nil {
					return err
				}
				r := packet.NewReader(nc, 0)
				if _, err := r.ReadPacket(0); err != nil {
					return err
				}
				send := func(p packet.Packet) {
					b, _ := packet.Append(nil, p, packet.V311)
					_, _ = nc.Write(b)
				}
				send(&packet.Connack{SessionPresent: round > 0})
				p, err := r.ReadPacket(packet.V311)
				if err != nil {
					return err
				}
				seen <- p
				switch round {
				case 0: // no PUBREC: the client must resend
				case 1:
					send(&packet.Pubrec{PacketID: 5})
					if p, err = r.ReadPacket(packet.V311); err != nil {
						return err
					}
					seen <- p // the PUBREL, then the connection drops
				case 2:
					send(&packet.Pubcomp{PacketID: 5})
				}
				nc.Close()
			}
			return nil
		}()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o := ConnectOptions{ClientID: "p7", Version: packet.V311}
	f := &QoS2Flight{ID: 5, Topic: "q/p7", Payload: []byte("p7:1")}
	for round := 0; round < 3; round++ {
		c, _, err := Dial(ctx, ln.Addr().String(), o, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = c.PublishQoS2(ctx, f, round > 0)
		c.Close()
		if (err == nil) != (round == 2) {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if err := <-serverDone; err != nil {
		t.Fatalf("server: %v", err)
	}
	close(seen)
	var got []string
	for p := range seen {
		switch p := p.(type) {
		case *packet.Publish:
			got = append(got, fmt.Sprintf("PUBLISH %d dup=%v", p.PacketID, p.Dup))
		case *packet.Pubrel:
			got = append(got, fmt.Sprintf("PUBREL %d", p.PacketID))
		default:
			got = append(got, p.Type().String())
		}
	}
	want := []string{"PUBLISH 5 dup=false", "PUBLISH 5 dup=true", "PUBREL 5", "PUBREL 5"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("server saw %v, want %v", got, want)
	}
}
