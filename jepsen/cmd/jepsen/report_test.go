package main

import (
	"strings"
	"testing"

	"github.com/bifrost-mq/bifrost/jepsen"
)

// TestReportNamesTheInvalidChecker: the checkers that failed come last and
// are named on the verdict's line, so a log cut to its tail (CI prints only
// the end) still says which one. Before, they came in map order and the
// verdict named none.
func TestReportNamesTheInvalidChecker(t *testing.T) {
	res := &jepsen.Results{Valid: jepsen.Invalid, Checkers: map[string]jepsen.Result{
		"takeover": {Valid: jepsen.Invalid, Summary: "2 pairs open together"},
		"queue":    {Valid: jepsen.Valid, Summary: "0 lost"},
		"final":    {Valid: jepsen.Valid},
		"crashes":  {Valid: jepsen.Unknown},
	}}
	var b strings.Builder
	report(&b, res)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	var order []string
	for _, l := range lines[1 : len(lines)-1] {
		order = append(order, strings.Fields(l)[0])
	}
	if got := strings.Join(order, ","); got != "final,queue,crashes,takeover" {
		t.Fatalf("checkers in order %s", got)
	}
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "=> INVALID (crashes, takeover)" {
		t.Fatalf("verdict line %q", last)
	}
}
