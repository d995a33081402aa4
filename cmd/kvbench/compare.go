package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
)

// targetRatio is what issue 11 asks of Bifrost: at least etcd's throughput
// on puts and gets at targetClients clients.
const targetRatio = 1.0

var targetClients = []int{16, 64}

func runCompare(args []string, w io.Writer) error {
	if len(args) != 2 {
		return errors.New("usage: kvbench compare A.json B.json (the ratios are B/A)")
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

// find is the report's result of a phase; nil if it did not run or failed.
func (r *report) find(op string, clients int) *result {
	for _, res := range r.Results {
		if res.Op == op && res.Clients == clients && res.Error == "" {
			return res
		}
	}
	return nil
}

// comparisonRow is one phase of two reports side by side.
type comparisonRow struct {
	op      string
	clients int
	a, b    *result
}

// ratio is b's throughput over a's; ok is false when either is missing.
func (r comparisonRow) ratio() (float64, bool) {
	if r.a == nil || r.b == nil || r.a.Rate == 0 {
		return 0, false
	}
	return r.b.Rate / r.a.Rate, true
}

// rows lists the phases either report holds: by op (put, then get), then by
// count of clients.
func rows(a, b *report) []comparisonRow {
	type phase struct {
		op      string
		clients int
	}
	var phases []phase
	for _, rep := range []*report{a, b} {
		for _, r := range rep.Results {
			p := phase{r.Op, r.Clients}
			if !slices.Contains(phases, p) {
				phases = append(phases, p)
			}
		}
	}
	slices.SortFunc(phases, func(x, y phase) int {
		if d := opIndex(x.op) - opIndex(y.op); d != 0 {
			return d
		}
		return x.clients - y.clients
	})
	out := make([]comparisonRow, len(phases))
	for i, p := range phases {
		out[i] = comparisonRow{op: p.op, clients: p.clients, a: a.find(p.op, p.clients), b: b.find(p.op, p.clients)}
	}
	return out
}

// targetMet says whether b reached targetRatio of a's throughput at every
// targeted count of clients that both ran; checked is false if none was.
func targetMet(rs []comparisonRow) (met, checked bool) {
	met = true
	for _, r := range rs {
		if !slices.Contains(targetClients, r.clients) {
			continue
		}
		ratio, ok := r.ratio()
		if !ok {
			continue
		}
		checked = true
		if ratio < targetRatio {
			met = false
		}
	}
	return met, checked
}

// printComparison prints every phase of a and b side by side with the ratio
// of b's throughput to a's, then both sides' CPU use per phase.
func printComparison(w io.Writer, a, b *report) {
	rs := rows(a, b)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	an, bn := a.Name, b.Name
	fmt.Fprintf(tw, "op\tclients\t%s ops/s\t%s ops/s\t%s/%s\t%s p50 ms\t%s p50 ms\t%s p99 ms\t%s p99 ms\t\n", an, bn, bn, an, an, bn, an, bn)
	for _, r := range rs {
		cell := func(res *result, v func(*result) float64, digits int) string {
			if res == nil {
				return "-"
			}
			return fmt.Sprintf("%.*f", digits, v(res))
		}
		ratio := "-"
		if x, ok := r.ratio(); ok {
			ratio = fmt.Sprintf("%.2fx", x)
		}
		rate := func(x *result) float64 { return x.Rate }
		p50 := func(x *result) float64 { return x.P50Ms }
		p99 := func(x *result) float64 { return x.P99Ms }
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.op, r.clients,
			cell(r.a, rate, 0), cell(r.b, rate, 0), ratio, cell(r.a, p50, 2), cell(r.b, p50, 2), cell(r.a, p99, 2), cell(r.b, p99, 2))
	}
	tw.Flush()

	fmt.Fprintf(w, "\nCPU over each window, %% of one core, generator / servers (! the generator used more: not saturated)\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "op\tclients\t%s\t%s\t\n", an, bn)
	warned := false
	for _, r := range rs {
		cell := func(res *result) string {
			if res == nil {
				return "-"
			}
			mark := ""
			if res.generatorBound() {
				mark, warned = " !", true
			}
			return formatPercent(res.GeneratorCPU) + " / " + formatPercent(res.ServerCPU) + mark
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t\n", r.op, r.clients, cell(r.a), cell(r.b))
	}
	tw.Flush()
	if warned {
		fmt.Fprintln(w, "! marks a figure that is a lower bound for that system.")
	}
	for _, rep := range []*report{a, b} {
		for _, r := range rep.Results {
			if r.Error != "" {
				fmt.Fprintf(w, "%s %s FAILED: %s\n", rep.Name, r.phaseKey(), r.Error)
			} else if r.Errors > 0 {
				fmt.Fprintf(w, "%s %s: %d requests failed (first: %s)\n", rep.Name, r.phaseKey(), r.Errors, r.FirstError)
			}
		}
	}
	if met, checked := targetMet(rs); checked {
		verdict := "met"
		if !met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "\ntarget %s >= %.1fx %s on puts and gets at %v clients: %s\n", bn, targetRatio, an, targetClients, verdict)
	}
}
