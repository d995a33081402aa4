package kvstore

import (
	"testing"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// pairCop writes two keys at once ("set V": x=V and y=V) and reads them
// back one after the other ("pair"), calling between reads, so a test can
// apply a command in the middle of a query.
type pairCop struct {
	between func()
}

func (c *pairCop) Mutate(tx Tx, input []byte) ([]byte, error) {
	v := input[len("set "):]
	if err := tx.Set([]byte("x"), v); err != nil {
		return nil, err
	}
	return nil, tx.Set([]byte("y"), v)
}

func (c *pairCop) Query(r Reader, _ []byte) ([]byte, error) {
	x, _, err := r.Get([]byte("x"))
	if err != nil {
		return nil, err
	}
	c.between()
	y, _, err := r.Get([]byte("y"))
	if err != nil {
		return nil, err
	}
	return append(append(x, ','), y...), nil
}

func (c *pairCop) Reset(Reader) error { return nil }

// TestQueryReadsOneState: a coprocessor query reads one state of the range,
// whatever is applied while it runs. Before, each of its reads went to the
// live database, and a command applied between two reads (here: one that
// sets x and y together) showed the query half of it: "1,2".
func TestQueryReadsOneState(t *testing.T) {
	e := openTestEngine(t, t.TempDir())
	defer e.Close()
	cop := &pairCop{between: func() {}}
	s := &rangeStateMachine{engine: e, rangeID: 9, replicaID: 1, coprocessorFor: func(*kvpb.RangeDescriptor) Coprocessor { return cop }}
	applied, err := s.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testSM{t: t, sm: s, index: applied}
	ver := ts.apply(initCmd(9, kvpb.Keyspace_KEYSPACE_DIST, "", ""))[0].Range.Ver
	ts.apply(write(ver, coprocOp("x", "set 1")))
	cop.between = func() {
		cop.between = func() {}
		if res := ts.apply(write(ver, coprocOp("x", "set 2")))[0]; res.Status != kvpb.Status_STATUS_OK {
			t.Errorf("set 2: %v %s", res.Status, res.Message)
		}
	}
	if got := ts.query(ver, "x", "pair"); got != "1,1" {
		t.Errorf("a query with a write applied between its reads read %q, want 1,1", got)
	}
	if got := ts.query(ver, "x", "pair"); got != "2,2" {
		t.Errorf("the next query read %q, want 2,2", got)
	}
}
