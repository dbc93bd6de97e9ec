package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// A barGroup is one category of a bar chart, with a value per series; a
// NaN value is a series the run did not measure.
type barGroup struct {
	label  string
	values []float64
}

// seriesColors are told apart by the colour-blind too (Okabe–Ito).
var seriesColors = []string{"#0072B2", "#999999", "#E69F00", "#CCCCCC", "#009E73"}

// barChart draws horizontal grouped bars as SVG: one group per category,
// one bar per series, each labelled with its value.
func barChart(title, unit string, series []string, groups []barGroup) string {
	const (
		labelW = 230.0
		plotW  = 440.0
		barH   = 11.0
		gapH   = 12.0
		top    = 46.0
		right  = 50.0
	)
	top2 := top + 14 // room for the legend's second line
	var peak float64
	for _, g := range groups {
		for _, v := range g.values {
			if !math.IsNaN(v) {
				peak = max(peak, v)
			}
		}
	}
	step := niceStep(peak / 5)
	axisMax := math.Ceil(peak/step) * step
	if axisMax == 0 {
		axisMax = 1
	}
	groupH := float64(len(series))*barH + gapH
	h := top2 + float64(len(groups))*groupH + 28
	w := labelW + plotW + right
	x := func(v float64) float64 { return labelW + v/axisMax*plotW }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="13" font-weight="bold">%s</text>`+"\n", labelW, html.EscapeString(title))
	lx := labelW
	for i, s := range series {
		fmt.Fprintf(&b, `<rect x="%.0f" y="28" width="10" height="10" fill="%s"/><text x="%.0f" y="37">%s</text>`+"\n",
			lx, seriesColors[i%len(seriesColors)], lx+14, html.EscapeString(s))
		lx += 14 + 7*float64(len(s)) + 16
	}
	for v := 0.0; v <= axisMax+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#e0e0e0"/>`+"\n", x(v), top2, x(v), h-24)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%s</text>`+"\n", x(v), h-10, format(v, unit))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end" fill="#555">%s</text>`+"\n", w-4, h-10, html.EscapeString(unit))
	for gi, g := range groups {
		y0 := top2 + float64(gi)*groupH
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n",
			labelW-8, y0+float64(len(series))*barH/2+4, html.EscapeString(g.label))
		for si, v := range g.values {
			y := y0 + float64(si)*barH
			if math.IsNaN(v) {
				continue
			}
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.0f" fill="%s"/>`+"\n",
				labelW, y, x(v)-labelW, barH-2, seriesColors[si%len(seriesColors)])
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="9" fill="#333">%s</text>`+"\n", x(v)+3, y+8, format(v, unit))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceStep rounds a raw axis step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*pow {
			return m * pow
		}
	}
	return 10 * pow
}
