package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/daemon"
)

// clientAnnotation marks the commands that talk to the daemon.
const clientAnnotation = "hbf-client"

// clientCmd marks cmd as one that talks to the daemon: before it runs, the
// environment fills its flags (HBF_SOCKET and the like) and the client of
// the daemon is built.
func clientCmd(cmd *cobra.Command) *cobra.Command {
	cmd.Annotations = map[string]string{clientAnnotation: "yes"}
	return cmd
}

// connect is the root's pre-run: for a client command it builds the one
// client every command uses.
func (c *cli) connect(cmd *cobra.Command, e env) error {
	if cmd.Annotations[clientAnnotation] == "" {
		return nil
	}
	if err := applyEnv(cmd.Flags(), e.getenv); err != nil {
		return usageError{err}
	}
	switch c.output {
	case "table", "":
	case "json":
		c.json = true
	default:
		return usageError{fmt.Errorf("-o %q: use table or json", c.output)}
	}
	c.client = api.NewClient(c.socket)
	return nil
}

func changeCmd(e env, c *cli, verb, use, short, long string, timed bool) *cobra.Command {
	var req api.ChangeRequest
	past := map[string]string{"block": "blocked", "unblock": "unblocked", "allow": "allowed", "disallow": "disallowed"}[verb]
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		RunE: func(cmd *cobra.Command, args []string) error {
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
			rs, err := c.client.Change(cmd.Context(), verb, req)
			if err != nil {
				return err
			}
			if req.All && len(rs) == 0 && !c.json {
				fmt.Fprintln(e.stdout, "nothing to unblock")
			}
			return printResults(e.stdout, past, rs, c.json)
		},
	}
	if timed {
		cmd.Flags().Var(durationValue{&req.For}, "for", "how long; 0 means no expiry")
		cmd.Flags().StringVar(&req.Reason, "reason", "", "why, for hbf list and the audit log")
	}
	if verb == "unblock" {
		cmd.Flags().BoolVar(&req.All, "all", false, "unblock every manual and scan block (list entries stay); with --origin, every block of that origin")
		cmd.Flags().StringVar(&req.Origin, "origin", "", "end only the blocks of this origin (fail2ban:<jail>); other blocks of the address stay")
	}
	if verb == "block" {
		cmd.Flags().StringVar(&req.Origin, "origin", "", "whose block this is: manual, or fail2ban:<jail> for fail2ban's action, which unblock --origin ends alone")
	}
	fleetUsage := map[string]string{
		"block":    "publish the block to the fleet too: every node applies it, through its own policy",
		"unblock":  "end every node's block of the prefix, fleet-wide (needs the fleet's admin credential)",
		"allow":    "put it on the fleet's allowlist: no node blocks it (needs the fleet's admin credential)",
		"disallow": "take it off the fleet's allowlist (needs the fleet's admin credential)",
	}[verb]
	cmd.Flags().BoolVar(&req.Fleet, "fleet", false, fleetUsage)
	return clientCmd(cmd)
}

func newBlockCmd(e env, c *cli) *cobra.Command {
	return changeCmd(e, c, "block", "block IP|CIDR...", "Block addresses or prefixes, in the kernel before it returns",
		`Block each IP or CIDR. The block is in force in the kernel when the command
returns. Refused, with the rule named: 0.0.0.0/0 and ::/0, prefixes wider than
the daemon's minimum, loopback, the host's own addresses and anything on the
allowlist (also a range that contains an allowlisted address).`, true)
}

func newUnblockCmd(e env, c *cli) *cobra.Command {
	return changeCmd(e, c, "unblock", "unblock IP|CIDR... | --all", "Remove blocks",
		`Remove the manual and scan blocks of each IP or CIDR (exactly that prefix).
Entries of a blocklist file stay: remove them from the file.`, false)
}

func newAllowCmd(e env, c *cli) *cobra.Command {
	return changeCmd(e, c, "allow", "allow IP|CIDR...", "Put addresses on the allowlist: never blocked",
		`Put each IP or CIDR on the allowlist. hbf never drops an allowlisted source
for a block or a scan; its scans are still reported.`, true)
}

func newDisallowCmd(e env, c *cli) *cobra.Command {
	return changeCmd(e, c, "disallow", "disallow IP|CIDR...", "Remove allowlist entries", `Remove allowlist entries added with hbf allow.`, false)
}

func newListCmd(e env, c *cli) *cobra.Command {
	var allowed bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List blocks (or, with --allowed, the allowlist)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if allowed {
				allows, err := c.client.Allows(cmd.Context())
				if err != nil {
					return err
				}
				if c.json {
					return json.NewEncoder(e.stdout).Encode(allows)
				}
				return printAllows(e.stdout, allows)
			}
			p := newBlockPrinter(e.stdout, c.json)
			err := c.client.Blocks(cmd.Context(), p.print)
			if cerr := p.close(); err == nil {
				err = cerr
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&allowed, "allowed", false, "list the allowlist instead")
	return clientCmd(cmd)
}

func newWhyCmd(e env, c *cli) *cobra.Command {
	return clientCmd(&cobra.Command{
		Use:   "why IP",
		Short: "Say whether an address is blocked or allowed, by what, since when, and why",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := netip.ParseAddr(args[0])
			if err != nil {
				return usageError{fmt.Errorf("%q is not an IP address", args[0])}
			}
			why, err := c.client.Why(cmd.Context(), addr)
			if err != nil {
				return err
			}
			if c.json {
				return json.NewEncoder(e.stdout).Encode(why)
			}
			printWhy(e.stdout, why)
			return nil
		},
	})
}

func newStatusCmd(e env, c *cli) *cobra.Command {
	return clientCmd(&cobra.Command{
		Use:   "status",
		Short: "Show the daemon's interfaces, settings, uptime, counters and entries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := c.client.Status(cmd.Context())
			if err != nil {
				return err
			}
			if c.json {
				return json.NewEncoder(e.stdout).Encode(st)
			}
			return printStatus(e.stdout, st)
		},
	})
}

func newEventsCmd(e env, c *cli) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the recent events; with --follow, then the live stream",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.client.Events(cmd.Context(), follow, eventPrinter(e.stdout, c.json))
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep showing new events until interrupted")
	return clientCmd(cmd)
}

func newModeCmd(e env, c *cli) *cobra.Command {
	return clientCmd(&cobra.Command{
		Use:   "mode [enforce|monitor]",
		Short: "Show or switch the mode: enforce blocks scanners, monitor only reports them",
		Long: `Without an argument, show the mode. enforce: scanners are blocked. monitor:
scans are reported as "would block" and nothing is blocked for them, while
manual and list blocks stay in force; for tuning thresholds on live traffic.
The switch lasts until the daemon restarts or reloads its configuration.`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"enforce", "monitor"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				st, err := c.client.Status(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, st.Settings["mode"])
				return nil
			}
			if _, err := daemon.ParseMode(args[0]); err != nil {
				return usageError{err}
			}
			if err := c.client.SetMode(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "mode:", args[0])
			return nil
		},
	})
}

func newReloadCmd(e env, c *cli) *cobra.Command {
	return clientCmd(&cobra.Command{
		Use:   "reload",
		Short: "Have the daemon re-read its configuration file and every list, and reopen its log file",
		Long: `Like SIGHUP: re-read the configuration file and every list, reopen the log
file. A configuration that does not check is refused whole, with the reason,
and the running one stays.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.client.Reload(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "reloaded")
			return nil
		},
	})
}

func newStopCmd(e env, c *cli) *cobra.Command {
	return clientCmd(&cobra.Command{
		Use:   "stop",
		Short: "Stop the daemon; enforcement stays in place",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.client.Stop(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "hbf daemon stopping; enforcement stays in place (hbf uninstall removes it)")
			return nil
		},
	})
}

func newUninstallCmd(e env, c *cli) *cobra.Command {
	pinPath, stateDir := daemon.Defaults.Start.PinPath, daemon.Defaults.Start.StateDir
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop the daemon and remove enforcement: detach the XDP program, remove its pins",
		Long: `Stop the daemon, if one runs, and remove what keeps enforcing after it: the
XDP program attached to each interface and the maps pinned under --pin-path.
The store (decisions, history) stays in --state-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := c.client.Uninstall(cmd.Context())
			switch {
			case err == nil:
				if err := waitStopped(cmd.Context(), c.client); err != nil {
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
	return clientCmd(cmd)
}

func newFleetCmd(e env, c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Work with the fleet this host shares blocks with",
	}
	cmd.AddCommand(clientCmd(&cobra.Command{
		Use:   "status",
		Short: "Show the fleet: members, their clocks, this host's connection and what it applies from each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := c.client.Fleet(cmd.Context())
			if err != nil {
				return err
			}
			if c.json {
				return json.NewEncoder(e.stdout).Encode(st)
			}
			return printFleet(e.stdout, st)
		},
	}))
	return cmd
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
