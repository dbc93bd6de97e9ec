package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/top"
)

func newTopCmd(e env, c *cli) *cobra.Command {
	opts := top.Options{Interval: time.Second, Sources: api.DefaultTopSources}
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show live what the firewall does: rates, the sources dropped, the latest events",
		Long: `Fill the terminal with what hbf does, refreshed every --interval: the mode, the
interfaces, the fleet and CrowdSec links; packets, drops, connections, scans and
blocks per second over the interval and the last minute; the sources being
dropped, busiest first, with their origin and time left; the latest events.

Keys: s sorts by another column, o shows one origin, / filters by an address
or CIDR, up and down select a source and w says why it is blocked, p pauses,
? shows help, q or Ctrl-C quits. Nothing in the view changes the firewall.

The sources come from one walk of the blocks when a view starts (the busiest so
far), then from what the kernel notes while a view asks: a new block at its
first drops, a busy one at each 1024th. No refresh walks every block.

When the output is not a terminal, hbf top prints one snapshot, two looks an
interval apart (rates need two), as text or, with -o json, as JSON.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Interval < 100*time.Millisecond {
				return usageError{fmt.Errorf("--interval %s: must be at least 100ms", opts.Interval)}
			}
			out, tty := e.stdout.(*os.File)
			tty = tty && isatty.IsTerminal(out.Fd()) && isatty.IsTerminal(os.Stdin.Fd())
			if tty && !c.json {
				opts.Color = e.getenv("NO_COLOR") == "" && e.getenv("TERM") != "dumb"
				return top.Run(cmd.Context(), c.client, opts, out)
			}
			snap, err := top.Take(cmd.Context(), c.client, opts)
			if err != nil {
				return err
			}
			if c.json {
				return json.NewEncoder(e.stdout).Encode(snap)
			}
			width := 120
			if n, err := strconv.Atoi(e.getenv("COLUMNS")); err == nil && n >= 40 {
				width = n
			}
			return snap.Text(e.stdout, width)
		},
	}
	cmd.Flags().DurationVar(&opts.Interval, "interval", opts.Interval, "time between two refreshes, and between a snapshot's two looks")
	return clientCmd(cmd)
}
