package top

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"github.com/hbf-firewall/hbf/internal/api"
)

// styles are the view's: bold and reverse always, colours when asked.
type styles struct {
	title, head, selected, warn, dim lipgloss.Style
}

func newStyles(color bool) styles {
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.Ascii)
	if color {
		r.SetColorProfile(termenv.ANSI256)
	}
	return styles{
		title:    r.NewStyle().Bold(true),
		head:     r.NewStyle().Bold(true).Foreground(lipgloss.Color("12")),
		selected: r.NewStyle().Reverse(true),
		warn:     r.NewStyle().Bold(true).Foreground(lipgloss.Color("9")),
		dim:      r.NewStyle().Faint(true),
	}
}

// View draws the screen.
func (m Model) View() string {
	w, h := max(m.width, 40), max(m.height, 10)
	var lines []string
	add := func(s string) { lines = append(lines, ansi.Truncate(s, w, "…")) }
	for _, l := range m.header() {
		add(l)
	}
	for _, l := range m.rateLines() {
		add(l)
	}
	if m.help {
		for _, l := range helpLines {
			add(l)
		}
		return fit(lines, h)
	}
	footer := m.footer()
	if m.batch {
		footer = ""
	}
	left := h - len(lines) - 1
	rows := m.rows()
	srcRows := max(min(len(rows), left/2-1), min(len(rows), 3), 1)
	if m.batch {
		srcRows = len(rows)
	}
	if m.why != nil || m.whyErr != nil {
		srcRows = max(left/3-1, 1)
	}
	add(m.styles.head.Render(padRight(fmt.Sprintf("%-24s %-16s %10s %12s %8s", "SOURCE", "ORIGIN",
		m.sortMark(ByInterval, "DROPS/"+shortDur(m.span())), m.sortMark(ByTotal, "TOTAL"), m.sortMark(ByLeft, "LEFT")), w)))
	first := max(0, m.selected-srcRows+1)
	for i := first; i < min(len(rows), first+srcRows); i++ {
		l := rowLine(rows[i], time.Now())
		if i == m.selected && !m.batch {
			add(m.styles.selected.Render(padRight("> "+l, w)))
		} else {
			add("  " + l)
		}
	}
	if len(rows) == 0 {
		add(m.styles.dim.Render("  nothing dropped from a block since the view started"))
	}
	switch {
	case m.whyErr != nil:
		add(m.styles.warn.Render("why: " + m.whyErr.Error()))
	case m.why != nil:
		for _, l := range whyLines(*m.why) {
			add(l)
		}
	default:
		add(m.styles.head.Render(padRight("EVENTS", w)))
		for i := 0; i < len(m.events) && len(lines) < h-1; i++ {
			add(m.events[i])
		}
	}
	return fit(lines, h-1) + "\n" + ansi.Truncate(footer, w, "…")
}

// fit pads or cuts lines to exactly h.
func fit(lines []string, h int) string {
	if len(lines) > h {
		lines = lines[:h]
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	return strings.Join(lines, "\n")
}

func (m Model) header() []string {
	t := m.styles.title.Render("hbf top")
	if len(m.history) == 0 {
		l := []string{t + "  reading the daemon…"}
		if m.err != nil {
			l = append(l, m.styles.warn.Render("daemon not answering: "+m.err.Error()))
		}
		return l
	}
	last := m.history[len(m.history)-1]
	st := last.status
	parts := []string{t, last.at.Local().Format("15:04:05"), st.Settings["mode"], "up " + st.Uptime}
	for _, i := range st.Interfaces {
		parts = append(parts, i.Name+" "+i.AttachedAs())
	}
	if m.paused {
		parts = append(parts, m.styles.warn.Render("PAUSED"))
	}
	lines := []string{strings.Join(parts, "  ")}
	var links []string
	if node := st.Settings["fleet"]; node != "" {
		state := "connected"
		if st.Counters["fleet_connected"] == 0 {
			state = m.styles.warn.Render("not connected")
		}
		links = append(links, fmt.Sprintf("fleet %s: %s, %d members", strings.Fields(node)[0], state, st.Counters["fleet_members"]))
	}
	if cs := st.CrowdSec; cs != nil {
		state := "connected"
		if !cs.Connected {
			state = m.styles.warn.Render("not connected")
		}
		held := 0
		for _, n := range cs.Decisions {
			held += n
		}
		read := "never"
		if !cs.LastPull.IsZero() {
			read = shortDur(time.Since(cs.LastPull)) + " ago"
		}
		links = append(links, fmt.Sprintf("crowdsec: %s, read %s, %d decisions", state, read, held))
	}
	if len(links) > 0 {
		lines = append(lines, strings.Join(links, "   "))
	}
	if m.err != nil {
		lines = append(lines, m.styles.warn.Render(fmt.Sprintf("daemon not answering since %s, retrying every %s:",
			m.errSince.Format("15:04:05"), m.opts.Interval)), m.styles.warn.Render("  "+m.err.Error()))
	}
	return lines
}

// span is the interval the per-interval figures cover.
func (m Model) span() time.Duration {
	if len(m.history) < 2 {
		return m.opts.Interval
	}
	return m.history[len(m.history)-1].at.Sub(m.history[len(m.history)-2].at)
}

func (m Model) rateLines() []string {
	if len(m.history) < 2 {
		return []string{m.styles.dim.Render("rates from the second look, " + shortDur(m.opts.Interval) + " on")}
	}
	last := len(m.history) - 1
	interval := ratesBetween(m.history[last-1], m.history[last])
	minute := ratesBetween(m.history[0], m.history[last])
	lines := []string{m.styles.head.Render(fmt.Sprintf("%-9s %10s %10s %10s %9s %7s %7s %5s", "per second",
		"packets", "passed", "dropped", "conns", "scans", "blocks", "lost"))}
	shown := []Rates{interval}
	if last > 1 { // the minute's row says more than the interval's
		shown = append(shown, minute)
	}
	for _, r := range shown {
		lines = append(lines, fmt.Sprintf("%-9s %10s %10s %10s %9s %7s %7s %5s", "last "+shortDur(r.Span),
			num(r.Packets), num(r.Passed), num(r.Dropped), num(r.Connections), num(r.Scans), num(r.Blocks), num(r.EventsLost)))
	}
	if len(interval.DroppedBy) > 0 {
		var by []string
		for _, k := range slices.Sorted(maps.Keys(interval.DroppedBy)) {
			by = append(by, k+" "+num(interval.DroppedBy[k]))
		}
		lines = append(lines, "dropped/s by reason: "+strings.Join(by, ", "))
	}
	return lines
}

func (m Model) sortMark(s Sort, label string) string {
	if m.sort == s {
		return label + "*"
	}
	return label
}

func (m Model) footer() string {
	if m.typing {
		return "address or CIDR: " + m.input + "_   (enter: filter, esc: cancel)"
	}
	origin, addr := m.filter.Origin, m.filter.Address
	if origin == "" {
		origin = "all"
	}
	if addr == "" {
		addr = "all"
	}
	long := fmt.Sprintf("[s]ort %s  [o]rigin %s  [/]address %s  [p]ause  [w]hy  [?]help  [q]uit", m.sort, origin, addr)
	if ansi.StringWidth(long) <= m.width {
		return long
	}
	return fmt.Sprintf("s:%s o:%s /:%s p w ? [q]uit", m.sort, origin, addr)
}

var helpLines = []string{
	"",
	"keys",
	"  s        sort by the next column: drops in the interval, total, source, time left, origin",
	"  o        show one origin: scan, limit, manual, file, fleet, crowdsec, fail2ban, all",
	"  /        show the sources within a CIDR, or whose address starts so; enter applies, esc cancels",
	"  up/down  select a source      w  why it is blocked (hbf why), again to close",
	"  p, space pause                ?  this help, again to close",
	"  q        quit (Ctrl-C too)    esc close help or why",
	"",
	"nothing here changes the firewall: hbf block, unblock and allow do",
}

func rowLine(r Row, now time.Time) string {
	left := "never"
	if !r.Expires.IsZero() {
		left = shortDur(r.Expires.Sub(now).Truncate(time.Second)) // a countdown: what is left, whole
	}
	return fmt.Sprintf("%-22s %-16s %10s %12s %8s", ansi.Truncate(r.Source, 22, "…"), ansi.Truncate(r.Origin, 16, "…"),
		num(float64(r.Interval)), num(float64(r.Total)), left)
}

func whyLines(w api.Why) []string {
	lines := []string{fmt.Sprintf("WHY %s: %s", w.Addr, w.Verdict)}
	for _, b := range w.Blocks {
		until := "never"
		if !b.Expires.IsZero() {
			until = b.Expires.Local().Format("2006-01-02 15:04:05")
		}
		lines = append(lines, fmt.Sprintf("  blocked %s by %s (%s), until %s, %d dropped", b.Prefix, b.Origin, b.Reason, until, b.Packets))
	}
	for _, a := range w.Allows {
		lines = append(lines, fmt.Sprintf("  allowed %s: %s %s", a.Prefix, a.Origin, a.Reason))
	}
	return lines
}

// num writes a count or rate short: 950, 12.3k, 4.5M.
func num(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.1fG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v == math.Trunc(v):
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}

// shortDur writes a duration to the second: 59m, 1h2m, 45s.
func shortDur(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d <= 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour && d%time.Minute == 0:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func padRight(s string, w int) string {
	if n := ansi.StringWidth(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return s
}
