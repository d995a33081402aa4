package ranges_test

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/internal/clustertls/tlstest"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestClusterMutualTLS (issue 17): a cluster with certificates from its CA
// works end to end; a client without one cannot destroy a replica or call
// any admin RPC; a store with a certificate from another CA cannot join: its
// Raft and gRPC are refused and no replica is added on it.
func TestClusterMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	outsider := tlstest.NewCA(t, "outsider")
	c := rangestest.Start(t, 3, rangestest.Options{TLS: ca.Credentials("store")})

	// Through every node: two of them forward to the leader over gRPC.
	for i := range c.Nodes {
		mustPut(t, c.Client(i), "tls-key", "v")
	}

	// Without the cluster's certificate, no call gets through, and the
	// replica it aimed at is still there.
	victim := c.Nodes[1].Store().Replicas()[0]
	trust := ca.Pool()
	stranger := keyPair(t, outsider.Node("stranger"))
	strangers := map[string]grpc.DialOption{
		"plaintext":                grpc.WithTransportCredentials(insecure.NewCredentials()),
		"TLS without certificate":  grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: trust})),
		"another CA's certificate": grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: trust, Certificates: stranger})),
	}
	for name, opt := range strangers {
		conn, err := grpc.NewClient(c.Addr(1), opt)
		if err != nil {
			t.Fatal(err)
		}
		_, err = rangespb.NewStoreClient(conn).DestroyReplica(ctxT(t, 5*time.Second),
			&rangespb.DestroyReplicaRequest{RangeId: victim.RangeID, ReplicaId: victim.ReplicaID})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: DestroyReplica = %v, want Unavailable", name, err)
		}
		if _, err := rangespb.NewAdminClient(conn).Ranges(ctxT(t, 5*time.Second), &rangespb.RangesRequest{}); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: Ranges = %v, want Unavailable", name, err)
		}
		conn.Close()
	}
	if !holds(c.Nodes[1], victim.RangeID) {
		t.Fatalf("range %d's replica on store 1 is gone", victim.RangeID)
	}

	// Raft admits a member's certificate and refuses none or another CA's.
	raft := c.Nodes[0].Store().RaftAddr()
	if err := raftHandshake(raft, &tls.Config{RootCAs: trust, Certificates: keyPair(t, ca.Node("peer"))}); err != nil {
		t.Fatalf("raft with the cluster's certificate: %v", err)
	}
	for name, cfg := range map[string]*tls.Config{"no certificate": {RootCAs: trust}, "another CA's": {RootCAs: trust, Certificates: stranger}} {
		if err := raftHandshake(raft, cfg); err == nil {
			t.Errorf("raft accepted a client with %s", name)
		}
	}

	// A store with another CA's certificate gossips its way in, but the
	// cluster cannot start a replica on it and it cannot reach the cluster.
	bad := c.AddNodeTLS(outsider.Credentials("bad-store"))
	badStore := c.Nodes[bad].Store().ID()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := c.Nodes[0].Membership().Store(badStore); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the store never appeared in gossip")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, err := c.Client(0).Admin.AddReplica(ctxT(t, 8*time.Second), &rangespb.AddReplicaRequest{RangeId: 1, StoreId: badStore})
	if err == nil {
		t.Fatal("a replica was added on a store with another CA's certificate")
	}
	if got := c.Nodes[bad].Store().Replicas(); len(got) != 0 {
		t.Fatalf("the outsider store holds replicas: %v", got)
	}
	if res, err := c.Nodes[bad].Router().Read(ctxT(t, 3*time.Second), kvpb.Keyspace_KEYSPACE_KV, []byte("tls-key"), false); err == nil {
		t.Fatalf("the outsider store read through the cluster: %v", res)
	}
	mustPut(t, c.Client(2), "tls-key", "after")
}

func holds(n *ranges.Node, rangeID uint64) bool {
	for _, r := range n.Store().Replicas() {
		if r.RangeID == rangeID {
			return true
		}
	}
	return false
}

// raftHandshake opens a TLS connection to a Raft address. Dragonboat's
// server checks the client's certificate during the handshake and drops a
// refused one: a read then fails at once. An admitted connection waits for
// a message, so the read times out.
func raftHandshake(addr string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err == nil {
		return errors.New("raft server sent data unasked")
	}
	return err
}

func keyPair(t *testing.T, f clustertls.Files) []tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return []tls.Certificate{cert}
}
