// Package plot draws a run's latency and throughput as SVG, with the fault
// periods shaded, so a reader sees what each fault did to the clients.
package plot

import (
	"bufio"
	"fmt"
	"html"
	"math"
	"os"
	"sort"

	"github.com/bifrost-mq/bifrost/jepsen/history"
)

const (
	width, height        = 1000.0, 420.0
	left, right          = 70.0, 20.0
	top, bottom          = 30.0, 50.0
	plotW, plotH         = width - left - right, height - top - bottom
	okColor, failColor   = "#2a9d38", "#d62728"
	infoColor, faultFill = "#ff9f0e", "#f3b0b0"
)

var typeColor = map[history.Type]string{history.OK: okColor, history.Fail: failColor, history.Info: infoColor}

type canvas struct {
	w          *bufio.Writer
	tMax       float64 // seconds
	yMin, yMax float64
	logY       bool
}

func (c *canvas) x(sec float64) float64 { return left + plotW*sec/c.tMax }

func (c *canvas) y(v float64) float64 {
	if c.logY {
		v, lo, hi := math.Log10(max(v, c.yMin)), math.Log10(c.yMin), math.Log10(c.yMax)
		return top + plotH*(1-(v-lo)/(hi-lo))
	}
	return top + plotH*(1-(v-c.yMin)/(c.yMax-c.yMin))
}

func (c *canvas) printf(format string, args ...any) { fmt.Fprintf(c.w, format, args...) }

func begin(path, title string, c *canvas) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	c.w = bufio.NewWriter(f)
	c.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", width, height)
	c.printf(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	c.printf(`<text x="%.0f" y="18" font-size="14">%s</text>`+"\n", left, html.EscapeString(title))
	return f, nil
}

func (c *canvas) faults(faults []history.Fault) {
	for i, f := range faults {
		x0, x1 := c.x(float64(f.Start)/1e9), c.x(float64(f.End)/1e9)
		c.printf(`<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="%s" fill-opacity="0.45"><title>%s</title></rect>`+"\n",
			x0, top, max(x1-x0, 1.5), plotH, faultFill, html.EscapeString(f.Name+": "+f.Desc))
		c.printf(`<text x="%.1f" y="%.0f" font-size="9" fill="#8b1a1a">%s</text>`+"\n", x0+2, top+10+float64(i%4)*10, html.EscapeString(f.Name))
	}
}

func (c *canvas) axes(yLabel string, yTicks []float64) {
	c.printf(`<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", left, top+plotH, left+plotW, top+plotH)
	c.printf(`<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", left, top, left, top+plotH)
	step := niceStep(c.tMax / 10)
	for s := 0.0; s <= c.tMax+1e-9; s += step {
		c.printf(`<text x="%.1f" y="%.0f" text-anchor="middle">%g</text>`+"\n", c.x(s), top+plotH+15, s)
	}
	c.printf(`<text x="%.0f" y="%.0f" text-anchor="middle">time (s)</text>`+"\n", left+plotW/2, height-12)
	for _, v := range yTicks {
		c.printf(`<text x="%.0f" y="%.1f" text-anchor="end">%g</text>`+"\n", left-5, c.y(v)+4, v)
		c.printf(`<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", left, c.y(v), left+plotW, c.y(v))
	}
	c.printf(`<text transform="translate(16,%.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+plotH/2, html.EscapeString(yLabel))
}

func (c *canvas) legend(names []string, colors []string) {
	for i, n := range names {
		x := left + plotW - 80*float64(len(names)-i)
		c.printf(`<rect x="%.0f" y="8" width="10" height="10" fill="%s"/><text x="%.0f" y="17">%s</text>`+"\n", x, colors[i], x+14, n)
	}
}

func end(f *os.File, c *canvas) error {
	c.printf("</svg>\n")
	if err := c.w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func span(pairs []history.Pair, faults []history.Fault) float64 {
	var t int64 = 1e9
	for _, p := range pairs {
		t = max(t, p.Completion.Time)
	}
	for _, f := range faults {
		t = max(t, f.End)
	}
	return float64(t) / 1e9
}

// Latency draws every operation as a point at its invocation time and its
// latency (log scale), coloured by how it completed.
func Latency(path string, pairs []history.Pair, faults []history.Fault) error {
	c := &canvas{tMax: span(pairs, faults), yMin: 0.1, yMax: 10, logY: true}
	for _, p := range pairs {
		c.yMax = max(c.yMax, float64(p.Completion.Time-p.Invoke.Time)/1e6)
	}
	c.yMax = math.Pow(10, math.Ceil(math.Log10(c.yMax)))
	f, err := begin(path, "latency (ms, log scale) by completion", c)
	if err != nil {
		return err
	}
	c.faults(faults)
	var ticks []float64
	for v := c.yMin; v <= c.yMax*1.0001; v *= 10 {
		ticks = append(ticks, v)
	}
	c.axes("latency (ms)", ticks)
	for _, t := range []history.Type{history.OK, history.Fail, history.Info} {
		c.printf(`<g fill="%s" fill-opacity="0.6">`+"\n", typeColor[t])
		for _, p := range pairs {
			if p.Completion.Type != t {
				continue
			}
			lat := float64(p.Completion.Time-p.Invoke.Time) / 1e6
			c.printf(`<circle cx="%.1f" cy="%.1f" r="1.6"/>`+"\n", c.x(float64(p.Invoke.Time)/1e9), c.y(lat))
		}
		c.printf("</g>\n")
	}
	c.legend([]string{"ok", "fail", "info"}, []string{okColor, failColor, infoColor})
	return end(f, c)
}

// Throughput draws completions per second, one line per completion type.
func Throughput(path string, pairs []history.Pair, faults []history.Fault) error {
	c := &canvas{tMax: span(pairs, faults)}
	buckets := int(math.Ceil(c.tMax)) + 1
	counts := map[history.Type][]float64{}
	for _, t := range []history.Type{history.OK, history.Fail, history.Info} {
		counts[t] = make([]float64, buckets)
	}
	for _, p := range pairs {
		if b := int(p.Completion.Time / 1e9); b < buckets && counts[p.Completion.Type] != nil {
			counts[p.Completion.Type][b]++
			c.yMax = max(c.yMax, counts[p.Completion.Type][b])
		}
	}
	c.yMax = max(10, niceStep(c.yMax/5)*5)
	f, err := begin(path, "throughput (completions per second)", c)
	if err != nil {
		return err
	}
	c.faults(faults)
	var ticks []float64
	for v := 0.0; v <= c.yMax; v += niceStep(c.yMax / 5) {
		ticks = append(ticks, v)
	}
	c.axes("operations/s", ticks)
	types := []history.Type{history.OK, history.Fail, history.Info}
	sort.Slice(types, func(i, j int) bool { return types[i] < types[j] })
	for _, t := range types {
		c.printf(`<polyline fill="none" stroke="%s" stroke-width="1.5" points="`, typeColor[t])
		for b, n := range counts[t] {
			c.printf("%.1f,%.1f ", c.x(float64(b)+0.5), c.y(n))
		}
		c.printf(`"/>` + "\n")
	}
	c.legend([]string{"ok", "fail", "info"}, []string{okColor, failColor, infoColor})
	return end(f, c)
}
