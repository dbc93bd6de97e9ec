package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/store"
)

// The client commands' output: a table (or lines) for people, JSON with
// -o json.

// printResults prints per-target results; any refusal makes the command
// fail.
func printResults(w io.Writer, verb string, rs []api.Result, asJSON bool) error {
	if asJSON {
		if err := json.NewEncoder(w).Encode(rs); err != nil {
			return err
		}
	}
	var refused []string
	for _, r := range rs {
		if !r.OK {
			refused = append(refused, r.Error)
			continue
		}
		if !asJSON {
			fmt.Fprintf(w, "%s %s\n", verb, report.PrefixString(r.Prefix))
		}
	}
	if len(refused) > 0 {
		return errors.New(strings.Join(refused, "; "))
	}
	return nil
}

func printAllows(w io.Writer, allows []api.Allow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tORIGIN\tREASON\tCREATED\tEXPIRES")
	for _, a := range allows {
		reason := dash(a.Reason)
		if a.Unenforced {
			reason += " (not in the kernel: its allowlist is full)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", report.PrefixString(a.Prefix), a.Origin, reason,
			stamp(a.Created), expires(a.Expires))
	}
	return tw.Flush()
}

// blockPrinter prints blocks as they stream in: a list file may hold a
// million.
type blockPrinter struct {
	w      io.Writer
	asJSON bool
	tw     *tabwriter.Writer
	enc    *json.Encoder
	n      int
}

func newBlockPrinter(w io.Writer, asJSON bool) *blockPrinter {
	p := &blockPrinter{w: w, asJSON: asJSON}
	if asJSON {
		p.enc = json.NewEncoder(w)
		fmt.Fprint(w, "[")
	} else {
		p.tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(p.tw, "PREFIX\tORIGIN\tREASON\tCREATED\tEXPIRES\tDROPPED\tPORTS")
	}
	return p
}

func (p *blockPrinter) print(b api.Block) error {
	if p.asJSON {
		if p.n > 0 {
			fmt.Fprint(p.w, ",")
		}
		p.n++
		return p.enc.Encode(b)
	}
	reason := b.Reason
	if b.Source != "" {
		reason += " " + b.Source
	}
	_, err := fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", report.PrefixString(b.Prefix), b.Origin,
		dash(reason), stamp(b.Created), expires(b.Expires), b.Packets, portsSeen(b.Ports))
	return err
}

func (p *blockPrinter) close() error {
	if p.asJSON {
		_, err := fmt.Fprintln(p.w, "]")
		return err
	}
	return p.tw.Flush()
}

var verdicts = map[string]string{
	"blocked":               "blocked",
	"allowed":               "allowed",
	"allowed-despite-block": "allowed (the allowlist overrides its blocks)",
	"not-blocked":           "not blocked",
}

func printWhy(w io.Writer, why api.Why) {
	fmt.Fprintf(w, "%s: %s\n", why.Addr, verdicts[why.Verdict])
	for _, b := range why.Blocks {
		fmt.Fprintf(w, "  blocked by %s (%s", report.PrefixString(b.Prefix), b.Origin)
		if b.Source != "" {
			fmt.Fprintf(w, " %s", b.Source)
		}
		fmt.Fprintf(w, "): %s; since %s, %s; %d packets dropped\n", dash(b.Reason), stamp(b.Created),
			untilText(b.Expires), b.Packets)
		if len(b.Ports) > 0 {
			fmt.Fprintf(w, "    %s:", map[bool]string{false: "scan evidence", true: "over the limit"}[b.Origin == string(store.OriginLimit)])
			for _, p := range b.Ports {
				fmt.Fprintf(w, " %s at %s", p, p.Seen.Local().Format("15:04:05.000"))
			}
			fmt.Fprintln(w)
		}
	}
	for _, a := range why.Allows {
		fmt.Fprintf(w, "  allowed by %s (%s): %s; %s\n", report.PrefixString(a.Prefix), a.Origin, dash(a.Reason), untilText(a.Expires))
	}
}

func printStatus(w io.Writer, st api.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "version\t%s\npid\t%d\nuptime\t%s\nstore\t%s\n", st.Version, st.PID, st.Uptime, st.Store)
	for _, i := range st.Interfaces {
		fmt.Fprintf(tw, "interface\t%s (%s)\n", i.Name, i.AttachedAs())
		if i.XDP != nil || len(i.TCX) > 0 {
			fmt.Fprintf(tw, "  ingress\t%s\n", i.Chain())
		}
	}
	for _, l := range st.Lists {
		fmt.Fprintf(tw, "list\t%s\t%d entries, loaded %s: %s\n", l.Source, l.Entries, stamp(l.Loaded), l.Status)
	}
	if cs := st.CrowdSec; cs != nil {
		state := "connected"
		if !cs.Connected {
			state = "not connected: " + dash(cs.Why)
		}
		fmt.Fprintf(tw, "crowdsec\t%s\t%s; last read %s; decisions %s; skipped %s; refused %s\n", cs.LAPI, state,
			stamp(cs.LastPull), countsText(cs.Decisions), countsText(cs.Skipped), countsText(cs.Refused))
	}
	for _, l := range st.Limits {
		fmt.Fprintf(tw, "limit\t%s\t%s; %d counted, %d over, %d blocked, %d dropped\n", l.Limit, l.Action,
			l.Counted, l.Exceeded, l.Blocked, l.Dropped)
	}
	for _, section := range []struct {
		name string
		kv   map[string]string
	}{{"setting", st.Settings}, {"counter", toStrings(st.Counters)}, {"entries", toStrings(st.Entries)}} {
		for _, k := range sortedKeys(section.kv) {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", section.name, k, section.kv[k])
		}
	}
	return tw.Flush()
}

func printFleet(w io.Writer, st api.FleetStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	state := "connected"
	if !st.Connected {
		state = "not connected: " + dash(st.Why)
	}
	fmt.Fprintf(tw, "node\t%s\nprefix\t%s\netcd\t%s\nstate\t%s (since %s)\nrevision\t%d\nadmin\t%t\n",
		st.Node, st.Prefix, strings.Join(st.Endpoints, ","), state, stamp(st.Since), st.Revision, st.Admin)
	fmt.Fprintf(tw, "published\t%d\npending\t%d\n", st.Published, st.Pending)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tHBF\tLAST SEEN\tSKEW\tAPPLIED HERE\tADDRESSES")
	for _, m := range st.Members {
		addrs := make([]string, len(m.Addrs))
		for i, a := range m.Addrs {
			addrs[i] = a.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", m.Node, dash(m.HBF), stamp(m.Clock), m.Skew, st.Entries[m.Node], strings.Join(addrs, ","))
	}
	return tw.Flush()
}

// eventPrinter prints event lines, JSON as the daemon sends them or text
// as the daemon writes them.
func eventPrinter(w io.Writer, asJSON bool) func([]byte) error {
	text := report.NewWriter(w, report.Text)
	return func(line []byte) error {
		if asJSON {
			_, err := fmt.Fprintf(w, "%s\n", line)
			return err
		}
		ev, err := report.ParseJSON(line)
		if err != nil {
			_, err = fmt.Fprintf(w, "%s\n", line)
			return err
		}
		return text.Write(ev)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func expires(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return stamp(t)
}

func untilText(t time.Time) string {
	if t.IsZero() {
		return "no expiry"
	}
	return "until " + stamp(t)
}

func portsSeen(ps []api.PortSeen) string {
	if len(ps) == 0 {
		return "-"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func toStrings[V any](m map[string]V) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = fmt.Sprint(v)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// countsText writes counts by key, sorted: "CAPI 1200, cscli 3"; "none".
func countsText[N int | uint64](m map[string]N) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		if m[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
