package jepsen

import "time"

// Spec names one run of a suite: a workload, the nemeses the schedule
// draws from, and how long the clients run.
type Spec struct {
	Workload string
	Nemeses  []string
	Duration time.Duration
	// Stores is the cluster size (default 3).
	Stores int
}

// Suites are the named profiles of the CLI's -suite flag.
var Suites = map[string][]Spec{
	// ci: a few minutes in total on two cores; every workload, and between
	// them every kind of fault.
	"ci": {
		{Workload: "register", Nemeses: []string{"partition-one", "partition-halves", "kill", "pause", "leader-transfer"}, Duration: 30 * time.Second},
		{Workload: "set", Nemeses: []string{"partition-ring", "kill", "split-merge-move"}, Duration: 20 * time.Second},
		{Workload: "moving-keys", Nemeses: []string{"split-merge-move"}, Duration: 25 * time.Second},
	},
	// full: every workload against every fault on its own, and mixed.
	"full": fullSuite(),
}

func fullSuite() []Spec {
	var out []Spec
	faults := [][]string{
		{"partition-one"}, {"partition-halves"}, {"partition-ring"}, {"partition-bridge"},
		{"kill"}, {"kill-minority"}, {"pause"}, {"leader-transfer"},
	}
	for _, w := range []string{"register", "set"} {
		for _, f := range faults {
			out = append(out, Spec{Workload: w, Nemeses: f, Duration: 60 * time.Second, Stores: 5})
		}
		out = append(out, Spec{Workload: w, Nemeses: []string{"split-merge-move"}, Duration: 60 * time.Second, Stores: 4})
	}
	out = append(out,
		Spec{Workload: "moving-keys", Nemeses: []string{"split-merge-move"}, Duration: 90 * time.Second, Stores: 4},
		Spec{Workload: "moving-keys", Nemeses: []string{"split-merge-move", "kill", "partition-halves"}, Duration: 90 * time.Second, Stores: 5},
	)
	return out
}
