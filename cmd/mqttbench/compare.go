package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

// metric is one row of the comparison table.
type metric struct {
	scenario string
	label    string
	unit     string
	digits   int // after the decimal point
	value    func(*result) float64
	higher   bool // higher is better
}

var (
	rate      = func(r *result) float64 { return r.Rate }
	p50       = func(r *result) float64 { return r.P50Ms }
	p99       = func(r *result) float64 { return r.P99Ms }
	kibPerCon = func(r *result) float64 { return r.BytesPerConn / 1024 }
	drainRate = func(r *result) float64 { return r.DrainRate }
)

var metrics = []metric{
	{"qos0", "QoS 0 throughput", "msgs/s", 0, rate, true},
	{"qos0", "QoS 0 latency p50", "ms", 2, p50, false},
	{"qos0", "QoS 0 latency p99", "ms", 2, p99, false},
	{"qos1", "QoS 1 throughput", "msgs/s", 0, rate, true},
	{"qos1", "QoS 1 latency p50", "ms", 2, p50, false},
	{"qos1", "QoS 1 latency p99", "ms", 2, p99, false},
	{"persistent", "persistent throughput", "msgs/s", 0, rate, true},
	{"persistent", "persistent latency p50", "ms", 2, p50, false},
	{"persistent", "persistent latency p99", "ms", 2, p99, false},
	{"fanin", "fan-in throughput", "msgs/s", 0, rate, true},
	{"fanin", "fan-in latency p50", "ms", 2, p50, false},
	{"fanin", "fan-in latency p99", "ms", 2, p99, false},
	{"offline", "offline enqueue", "msgs/s", 0, rate, true},
	{"offline", "offline drain", "msgs/s", 0, drainRate, true},
	{"fanout", "fan-out throughput", "deliveries/s", 0, rate, true},
	{"fanout", "fan-out latency p50", "ms", 2, p50, false},
	{"fanout", "fan-out latency p99", "ms", 2, p99, false},
	{"connect", "connects", "connects/s", 0, rate, true},
	{"connect", "connect cycle p99", "ms", 2, p99, false},
	{"idle", "memory per idle connection", "KiB RSS", 1, kibPerCon, false},
}

func runCompare(args []string, w io.Writer) error {
	if len(args) != 2 {
		return errors.New("usage: mqttbench compare A.json B.json (the table shows B/A)")
	}
	a, err := loadReport(args[0])
	if err != nil {
		return err
	}
	b, err := loadReport(args[1])
	if err != nil {
		return err
	}
	printComparison(w, a, b)
	return nil
}

func loadReport(path string) (*report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// find is the report's result of a scenario; nil if it did not run or
// failed.
func (r *report) find(scenario string) *result {
	for _, res := range r.Results {
		if res.Scenario == scenario && res.Error == "" {
			return res
		}
	}
	return nil
}

// printComparison prints the metrics of a and b side by side with the ratio
// b/a, then both processes' CPU use per scenario.
func printComparison(w io.Writer, a, b *report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "metric\tunit\t%s\t%s\t%s/%s\tbetter\t\n", a.Broker, b.Broker, b.Broker, a.Broker)
	for _, m := range metrics {
		ra, rb := a.find(m.scenario), b.find(m.scenario)
		if ra == nil && rb == nil {
			continue
		}
		cell := func(r *result) string {
			if r == nil {
				return "-"
			}
			return fmt.Sprintf("%.*f", m.digits, m.value(r))
		}
		ratio := "-"
		if ra != nil && rb != nil && m.value(ra) != 0 {
			ratio = fmt.Sprintf("%.2f", m.value(rb)/m.value(ra))
		}
		better := "lower"
		if m.higher {
			better = "higher"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", m.label, m.unit, cell(ra), cell(rb), ratio, better)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nCPU over each window, %% of one core, generator / broker (! the generator used more: not saturated)\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "scenario\t%s\t%s\t\n", a.Broker, b.Broker)
	warned := false
	for _, s := range scenarios {
		ra, rb := a.find(s.name), b.find(s.name)
		if s.name == "idle" || ra == nil && rb == nil {
			continue
		}
		cell := func(r *result) string {
			if r == nil {
				return "-"
			}
			mark := ""
			if r.generatorBound() {
				mark, warned = " !", true
			}
			return formatPercent(r.GeneratorCPU) + " / " + formatPercent(r.BrokerCPU) + mark
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", s.name, cell(ra), cell(rb))
	}
	tw.Flush()
	if warned {
		fmt.Fprintln(w, "! marks a figure that is a lower bound for that broker.")
	}

	fmt.Fprintln(w)
	for _, s := range scenarios {
		for _, rep := range []*report{a, b} {
			for _, r := range rep.Results {
				switch {
				case r.Scenario != s.name:
				case r.Error != "":
					fmt.Fprintf(w, "%s %s FAILED: %s\n", rep.Broker, r.Scenario, r.Error)
				case r.Lost != 0 || r.Duplicated != 0:
					fmt.Fprintf(w, "%s %s: %d lost, %d duplicated of %d published\n", rep.Broker, r.Scenario, r.Lost, r.Duplicated, r.Sent)
				}
			}
		}
		if r := a.find(s.name); r != nil {
			fmt.Fprintf(w, "%-8s %s\n", s.name, r.Description)
		} else if r := b.find(s.name); r != nil {
			fmt.Fprintf(w, "%-8s %s\n", s.name, r.Description)
		}
	}
}
