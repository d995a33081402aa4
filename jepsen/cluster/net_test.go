package cluster

import (
	"context"
	"errors"
	"testing"
)

// TestGoneIsNotAFailure: teardown deletes links and namespaces that the
// kernel may already have removed; a deletion that finds nothing to delete
// got what it wanted. `make test` once failed a valid run on
// "ip link del bfj08d68h3: exit status 2: RTNETLINK answers: No such
// device": the host end of a veth pair went with its namespace between
// the name's lookup and the delete.
func TestGoneIsNotAFailure(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		gone bool
	}{
		{"ip link del bfj08d68h3: exit status 2: RTNETLINK answers: No such device", true},
		{`ip link del bfj08d68h3: exit status 1: Cannot find device "bfj08d68h3"`, true},
		{`ip netns del bfj08d68n1: exit status 1: Cannot remove namespace file "/run/netns/bfj08d68n1": No such file or directory`, true},
		{"ip link del bfj08d68br: exit status 2: RTNETLINK answers: Operation not permitted", false},
		{"ip netns del bfj08d68n1: exit status 1: Cannot remove namespace file: Device or resource busy", false},
	} {
		if got := gone(errors.New(tc.msg)); got != tc.gone {
			t.Errorf("gone(%q) = %v, want %v", tc.msg, got, tc.gone)
		}
	}
	// The real tool's answer for a link that does not exist.
	if err := RequireTools(); err != nil {
		t.Skip(err)
	}
	err := run(context.Background(), "ip", "link", "del", NamePrefix+"zzzzzh9")
	if err == nil || !gone(err) {
		t.Fatalf("deleting a link that does not exist: %v; want an error that gone recognises", err)
	}
}
