package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/daemon"
	"github.com/hbf-firewall/hbf/internal/report"
)

// clientOpts are the flags every client command shares.
type clientOpts struct {
	socket string
	output string // table or json
}

func (o *clientOpts) client() *api.Client { return api.NewClient(o.socket) }

func (o *clientOpts) json() (bool, error) {
	switch o.output {
	case "table", "":
		return false, nil
	case "json":
		return true, nil
	}
	return false, usageError{fmt.Errorf("-o %q: use table or json", o.output)}
}

// clientCmd builds a command that talks to the daemon: it takes the socket
// from --socket or HBF_SOCKET.
func clientCmd(e env, o *clientOpts, cmd *cobra.Command, withOutput bool) *cobra.Command {
	cmd.Flags().StringVar(&o.socket, "socket", api.DefaultSocket, "the daemon's API socket [HBF_SOCKET]")
	if withOutput {
		cmd.Flags().StringVarP(&o.output, "output", "o", "table", "table or json")
	}
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if err := applyEnv(c.Flags(), e.getenv); err != nil {
			return usageError{err}
		}
		if _, err := o.json(); err != nil {
			return err
		}
		return run(c, args)
	}
	return cmd
}

// results prints per-target results; any refusal makes the command fail.
func results(w io.Writer, verb string, rs []api.Result, asJSON bool) error {
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

func changeCmd(e env, verb, use, short, long string, timed bool) *cobra.Command {
	o := &clientOpts{}
	var req api.ChangeRequest
	past := map[string]string{"block": "blocked", "unblock": "unblocked", "allow": "allowed", "disallow": "disallowed"}[verb]
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		RunE: func(c *cobra.Command, args []string) error {
			req.Targets = args
			if len(args) == 0 && !req.All {
				if verb == "unblock" {
					return usageError{errors.New("name what to unblock, or --all for every manual and scan block")}
				}
				return usageError{fmt.Errorf("name at least one IP or CIDR to %s", verb)}
			}
			if req.All && len(args) > 0 {
				return usageError{errors.New("--all takes no targets")}
			}
			asJSON, _ := o.json()
			rs, err := o.client().Change(c.Context(), verb, req)
			if err != nil {
				return err
			}
			if req.All && len(rs) == 0 && !asJSON {
				fmt.Fprintln(e.stdout, "nothing to unblock")
			}
			return results(e.stdout, past, rs, asJSON)
		},
	}
	if timed {
		cmd.Flags().Var(durationValue{&req.For}, "for", "how long; 0 means no expiry")
		cmd.Flags().StringVar(&req.Reason, "reason", "", "why, for hbf list and the audit log")
	}
	if verb == "unblock" {
		cmd.Flags().BoolVar(&req.All, "all", false, "unblock every manual and scan block (list entries stay)")
	}
	return clientCmd(e, o, cmd, true)
}

func newBlockCmd(e env) *cobra.Command {
	return changeCmd(e, "block", "block IP|CIDR...", "Block addresses or prefixes, in the kernel before it returns",
		`Block each IP or CIDR. The block is in force in the kernel when the command
returns. Refused, with the rule named: 0.0.0.0/0 and ::/0, prefixes wider than
the daemon's minimum, loopback, the host's own addresses and anything on the
allowlist (also a range that contains an allowlisted address).`, true)
}

func newUnblockCmd(e env) *cobra.Command {
	return changeCmd(e, "unblock", "unblock IP|CIDR... | --all", "Remove blocks",
		`Remove the manual and scan blocks of each IP or CIDR (exactly that prefix).
Entries of a blocklist file stay: remove them from the file.`, false)
}

func newAllowCmd(e env) *cobra.Command {
	return changeCmd(e, "allow", "allow IP|CIDR...", "Put addresses on the allowlist: never blocked",
		`Put each IP or CIDR on the allowlist. hbf never drops an allowlisted source
for a block or a scan; its scans are still reported.`, true)
}

func newDisallowCmd(e env) *cobra.Command {
	return changeCmd(e, "disallow", "disallow IP|CIDR...", "Remove allowlist entries", `Remove allowlist entries added with hbf allow.`, false)
}

func newListCmd(e env) *cobra.Command {
	o := &clientOpts{}
	var allowed bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List blocks (or, with --allowed, the allowlist)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			asJSON, _ := o.json()
			cl := o.client()
			if allowed {
				allows, err := cl.Allows(c.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(e.stdout).Encode(allows)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PREFIX\tORIGIN\tREASON\tCREATED\tEXPIRES")
				for _, a := range allows {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", report.PrefixString(a.Prefix), a.Origin, dash(a.Reason),
						stamp(a.Created), expires(a.Expires))
				}
				return tw.Flush()
			}
			if asJSON {
				// Streamed: a list file may hold a million entries.
				fmt.Fprint(e.stdout, "[")
				enc := json.NewEncoder(e.stdout)
				n := 0
				err := cl.Blocks(c.Context(), func(b api.Block) error {
					if n > 0 {
						fmt.Fprint(e.stdout, ",")
					}
					n++
					return enc.Encode(b)
				})
				fmt.Fprintln(e.stdout, "]")
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PREFIX\tORIGIN\tREASON\tCREATED\tEXPIRES\tDROPPED\tPORTS")
			err := cl.Blocks(c.Context(), func(b api.Block) error {
				reason := b.Reason
				if b.Source != "" {
					reason += " " + b.Source
				}
				_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", report.PrefixString(b.Prefix), b.Origin,
					dash(reason), stamp(b.Created), expires(b.Expires), b.Packets, ports(b.Ports))
				return err
			})
			if ferr := tw.Flush(); err == nil {
				err = ferr
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&allowed, "allowed", false, "list the allowlist instead")
	return clientCmd(e, o, cmd, true)
}

func newWhyCmd(e env) *cobra.Command {
	o := &clientOpts{}
	cmd := &cobra.Command{
		Use:   "why IP",
		Short: "Say whether an address is blocked or allowed, by what, since when, and why",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			addr, err := netip.ParseAddr(args[0])
			if err != nil {
				return usageError{fmt.Errorf("%q is not an IP address", args[0])}
			}
			asJSON, _ := o.json()
			why, err := o.client().Why(c.Context(), addr)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(why)
			}
			w := e.stdout
			fmt.Fprintf(w, "%s: %s\n", why.Addr, map[string]string{
				"blocked":               "blocked",
				"allowed":               "allowed",
				"allowed-despite-block": "allowed (the allowlist overrides its blocks)",
				"not-blocked":           "not blocked",
			}[why.Verdict])
			for _, b := range why.Blocks {
				fmt.Fprintf(w, "  blocked by %s (%s", report.PrefixString(b.Prefix), b.Origin)
				if b.Source != "" {
					fmt.Fprintf(w, " %s", b.Source)
				}
				fmt.Fprintf(w, "): %s; since %s, %s; %d packets dropped\n", dash(b.Reason), stamp(b.Created),
					untilText(b.Expires), b.Packets)
				if len(b.Ports) > 0 {
					fmt.Fprintf(w, "    scan evidence:")
					for _, p := range b.Ports {
						fmt.Fprintf(w, " %d at %s", p.Port, p.Seen.Local().Format("15:04:05.000"))
					}
					fmt.Fprintln(w)
				}
			}
			for _, a := range why.Allows {
				fmt.Fprintf(w, "  allowed by %s (%s): %s; %s\n", report.PrefixString(a.Prefix), a.Origin, dash(a.Reason), untilText(a.Expires))
			}
			return nil
		},
	}
	return clientCmd(e, o, cmd, true)
}

func newStatusCmd(e env) *cobra.Command {
	o := &clientOpts{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's interfaces, settings, uptime, counters and entries",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			asJSON, _ := o.json()
			st, err := o.client().Status(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(st)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "version\t%s\npid\t%d\nuptime\t%s\nstore\t%s\n", st.Version, st.PID, st.Uptime, st.Store)
			for _, i := range st.Interfaces {
				fmt.Fprintf(tw, "interface\t%s (%s XDP)\n", i.Name, i.Mode)
			}
			for _, l := range st.Lists {
				fmt.Fprintf(tw, "list\t%s\t%d entries, loaded %s: %s\n", l.Source, l.Entries, stamp(l.Loaded), l.Status)
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
		},
	}
	return clientCmd(e, o, cmd, true)
}

func newEventsCmd(e env) *cobra.Command {
	o := &clientOpts{}
	var follow bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the recent events; with --follow, then the live stream",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			asJSON, _ := o.json()
			text := report.NewWriter(e.stdout, report.Text)
			return o.client().Events(c.Context(), follow, func(line []byte) error {
				if asJSON {
					_, err := fmt.Fprintf(e.stdout, "%s\n", line)
					return err
				}
				ev, err := report.ParseJSON(line)
				if err != nil {
					_, err = fmt.Fprintf(e.stdout, "%s\n", line)
					return err
				}
				return text.Write(ev)
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep showing new events until interrupted")
	return clientCmd(e, o, cmd, true)
}

func newModeCmd(e env) *cobra.Command {
	o := &clientOpts{}
	cmd := &cobra.Command{
		Use:   "mode [enforce|monitor]",
		Short: "Show or switch the mode: enforce blocks scanners, monitor only reports them",
		Long: `Without an argument, show the mode. enforce: scanners are blocked. monitor:
scans are reported as "would block" and nothing is blocked for them, while
manual and list blocks stay in force; for tuning thresholds on live traffic.
The switch lasts until the daemon restarts or reloads its configuration.`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"enforce", "monitor"},
		RunE: func(c *cobra.Command, args []string) error {
			cl := o.client()
			if len(args) == 0 {
				st, err := cl.Status(c.Context())
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, st.Settings["mode"])
				return nil
			}
			if _, err := daemon.ParseMode(args[0]); err != nil {
				return usageError{err}
			}
			if err := cl.SetMode(c.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "mode:", args[0])
			return nil
		},
	}
	return clientCmd(e, o, cmd, false)
}

func newReloadCmd(e env) *cobra.Command {
	o := &clientOpts{}
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Have the daemon re-read its configuration file and every list, and reopen its log file",
		Long: `Like SIGHUP: re-read the configuration file and every list, reopen the log
file. A configuration that does not check is refused whole, with the reason,
and the running one stays.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.client().Reload(c.Context()); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "reloaded")
			return nil
		},
	}
	return clientCmd(e, o, cmd, false)
}

func newStopCmd(e env) *cobra.Command {
	o := &clientOpts{}
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop the daemon; enforcement stays in place",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.client().Stop(c.Context()); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "hbf daemon stopping; enforcement stays in place (hbf uninstall removes it)")
			return nil
		},
	}
	return clientCmd(e, o, cmd, false)
}

func newUninstallCmd(e env) *cobra.Command {
	o := &clientOpts{}
	pinPath, stateDir := daemon.Defaults.Start.PinPath, daemon.Defaults.Start.StateDir
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop the daemon and remove enforcement: detach the XDP program, remove its pins",
		Long: `Stop the daemon, if one runs, and remove what keeps enforcing after it: the
XDP program attached to each interface and the maps pinned under --pin-path.
The store (decisions, history) stays in --state-dir.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := applyEnv(c.Flags(), e.getenv); err != nil {
				return usageError{err}
			}
			err := o.client().Uninstall(c.Context())
			switch {
			case err == nil:
				if err := waitStopped(c.Context(), o.client()); err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, "hbf daemon stopped; enforcement removed")
				return nil
			case !errors.Is(err, api.ErrNoDaemon):
				return err
			}
			detached, err := daemon.Uninstall(pinPath, stateDir)
			if err != nil {
				return err
			}
			if len(detached) == 0 {
				fmt.Fprintf(e.stdout, "nothing attached; pins under %s removed\n", pinPath)
				return nil
			}
			fmt.Fprintf(e.stdout, "detached from %s; pins under %s removed\n", strings.Join(detached, ", "), pinPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&pinPath, "pin-path", pinPath, "bpffs folder of hbf's pins, when no daemon runs [HBF_PIN_PATH]")
	cmd.Flags().StringVar(&stateDir, "state-dir", stateDir, "hbf's state folder, when no daemon runs [HBF_STATE_DIR]")
	return clientCmd(e, o, cmd, false)
}

// waitStopped waits until the daemon no longer answers.
func waitStopped(ctx context.Context, cl *api.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if _, err := cl.Status(ctx); errors.Is(err, api.ErrNoDaemon) {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("the daemon did not stop within 30s")
		case <-time.After(100 * time.Millisecond):
		}
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

func ports(ps []api.PortSeen) string {
	if len(ps) == 0 {
		return "-"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p.Port)
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

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
