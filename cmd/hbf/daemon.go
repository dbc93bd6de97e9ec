package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hbf-firewall/hbf/internal/daemon"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/hostnet"
	"github.com/hbf-firewall/hbf/internal/limit"
	"github.com/hbf-firewall/hbf/internal/report"
)

// defaultConfigFile is read when it exists and --config names no other.
const defaultConfigFile = "/etc/hbf/hbf.yaml"

// daemonFlags are the daemon's settings. Each has one name as a flag
// (--max-ports), an environment variable (HBF_MAX_PORTS) and a key of the
// configuration file (max-ports:); that is also the order of precedence.
type daemonFlags struct {
	fs                                                   *pflag.FlagSet
	cfg                                                  daemon.Config
	attach, tcxAnchor, xdpMode, logFormat, connLog, mode string
	udpScans, countPorts                                 string
	fleetShare                                           string
	config                                               string
}

func newDaemonFlags(fs *pflag.FlagSet) *daemonFlags {
	d := &daemonFlags{fs: fs, cfg: daemon.Defaults}
	cfg := &d.cfg
	fs.StringVar(&d.config, "config", "", "YAML file of settings, keys named as these flags (default "+defaultConfigFile+" when present) [HBF_CONFIG]")
	fs.StringSliceVar(&cfg.Start.Ifaces, "iface", nil, "interface to protect, repeatable (default: the interface of the default route) [HBF_IFACE]")
	fs.IntVar(&cfg.Settings.MaxPorts, "max-ports", cfg.Settings.MaxPorts, fmt.Sprintf("a source trying more than this many distinct ports within --window is a scanner (1-%d) [HBF_MAX_PORTS]", dataplane.MaxPortsLimit))
	fs.Var(durationValue{&cfg.Settings.Window}, "window", "sliding window of the scan threshold: a duration or seconds [HBF_TIME_THRESHOLD]")
	fs.StringVar(&d.mode, "mode", "enforce", "enforce: block scanners; monitor: report them as \"would block\" (manual and list blocks stay in force) [HBF_MODE]")
	fs.Var(portsValue{&cfg.Settings.IgnorePorts}, "ignore-ports", "ports (and ranges) that never count toward a scan nor are a reason to block, of both protocols or of one: 80,443,53/udp,8000-8100/tcp [HBF_IGNORE_PORTS]")
	fs.StringVar(&d.udpScans, "udp-scans", string(cfg.Settings.UDPScans), "UDP datagrams to closed ports count toward a scan: block (a UDP scan is blocked as a TCP one), report (reported, never blocked) or off [HBF_UDP_SCANS]")
	fs.StringVar(&d.countPorts, "count-ports", "all", "which SYNs count toward a scan: all (any port but the ignored ones) or closed (only ports nothing on the host serves) [HBF_COUNT_PORTS]")
	fs.Var(durationValue{&cfg.Settings.BlockDuration}, "block-duration", "how long a scanner, or a source over a connection limit, stays blocked; 0 blocks for good [HBF_BLOCK_DURATION]")
	fs.Var(limitsValue{&cfg.Settings.Limits}, "limit", fmt.Sprintf("connection limit of a port, repeatable: at most COUNT connections (TCP: completed handshakes; UDP: datagrams) from one source in any WINDOW, as 22/tcp=6/30s; the next blocks the source for --block-duration, or with :escalate longer at each offence, or with :drop only drops its SYNs to the port while over; UDP limits only drop (%s; COUNT at most %d) [HBF_LIMIT]", limit.Form, limit.MaxCount))
	fs.IntVar(&cfg.Settings.ScanBlocksPerMinute, "scan-blocks-per-minute", cfg.Settings.ScanBlocksPerMinute, "at most this many scanners are blocked per minute (spoofed decoys cannot buy more); past it they are reported and their attempts dropped for their window; 0: no limit [HBF_SCAN_BLOCKS_PER_MINUTE]")
	fs.IntVar(&cfg.Settings.ScanPrefixV6, "scan-prefix-v6", cfg.Settings.ScanPrefixV6, fmt.Sprintf("off-link IPv6 scanners are counted and blocked per prefix of this length (%d-128; 128: per address); on-link ones per address [HBF_SCAN_PREFIX_V6]", dataplane.MinIPv6ScanPrefix))
	fs.StringVar(&cfg.Settings.ResolvConf, "resolv-conf", cfg.Settings.ResolvConf, "file naming the DNS resolvers, which are never blocked; followed as it changes [HBF_RESOLV_CONF]")
	fs.Var(scheduleValue{&cfg.Settings.Escalation.After}, "escalation", "blocks of a source blocked again for a scan, after the first: durations, 0 for good, or none [HBF_ESCALATION]")
	fs.Var(durationValue{&cfg.Settings.Escalation.Forget}, "escalation-forget", "a source that scans no more for this long starts again at the first offence [HBF_ESCALATION_FORGET]")
	fs.Var(durationValue{&cfg.Start.Timeout}, "timeout", "run this long, then exit cleanly; 0 runs until stopped [HBF_TIMEOUT_SECONDS]")
	fs.StringVar(&d.attach, "attach", string(cfg.Start.Attach), "the hook hbf decides at: xdp (its own XDP link), tcx (TC ingress through TCX, Linux 6.6+, beside other programs) or auto (xdp where every XDP hook is free, else tcx) [HBF_ATTACH]")
	fs.StringVar(&d.tcxAnchor, "tcx-anchor", "head", "with TCX: head (before the other programs at TC ingress, which cannot then hide traffic from hbf; kept there) or tail [HBF_TCX_ANCHOR]")
	fs.StringVar(&d.xdpMode, "xdp-mode", string(cfg.Start.XDPMode), "auto, native or generic; auto falls back to generic when the driver has no native XDP [HBF_XDP_MODE]")
	fs.StringVar(&cfg.Start.PinPath, "pin-path", cfg.Start.PinPath, "bpffs folder for hbf's pinned maps and links [HBF_PIN_PATH]")
	fs.StringVar(&cfg.Start.StateDir, "state-dir", cfg.Start.StateDir, "folder for hbf's state and its single-instance lock [HBF_STATE_DIR]")
	fs.StringVar(&cfg.Start.MetricsAddr, "metrics-addr", cfg.Start.MetricsAddr, "address of /metrics, /healthz and /readyz; empty disables them [HBF_METRICS_ADDR]")
	fs.StringVar(&d.logFormat, "log-format", string(cfg.Start.LogFormat), "event lines as text or json [HBF_LOG_FORMAT]")
	fs.StringVar(&d.connLog, "log-connections", "all", "connection lines: all, off, or rate=N/s (then a line counts those held back; counters stay exact) [HBF_LOG_CONNECTIONS]")
	fs.StringVar(&cfg.Settings.LogFile, "log-file", "", "also append event lines to this file; reopened on reload, for logrotate [HBF_LOG_FILE]")
	fs.StringSliceVar(&cfg.Settings.Blocklists, "blocklist", nil, "file of IPs and CIDRs to block, one per line, # or ; comments; repeatable; watched [HBF_BLOCKLIST_FILE_PATH]")
	fs.StringSliceVar(&cfg.Settings.BlocklistURLs, "blocklist-url", nil, "HTTP(S) feed of IPs and CIDRs (DROP-style ; comments work), repeatable; fetched at start and every --feed-refresh [HBF_BLOCKLIST_URL]")
	fs.Var(durationValue{&cfg.Settings.FeedRefresh}, "feed-refresh", "how often feeds are fetched again (conditional GET) [HBF_FEED_REFRESH]")
	fs.IntVar(&cfg.Start.MaxBlocks, "max-blocks", cfg.Start.MaxBlocks, fmt.Sprintf("blocked addresses the kernel holds, of each family (%d-%d); a sixteenth (at most 32768) stays free for scan, manual and fleet blocks; a new value at a restart copies every block [HBF_MAX_BLOCKS]", dataplane.MinCapacity, dataplane.MaxCapacity))
	fs.IntVar(&cfg.Start.MaxBlockPrefixes, "max-block-prefixes", cfg.Start.MaxBlockPrefixes, fmt.Sprintf("blocked prefixes (CIDRs) the kernel holds (%d-%d), as --max-blocks [HBF_MAX_BLOCK_PREFIXES]", dataplane.MinCapacity, dataplane.MaxCapacity))
	fs.BoolVar(&cfg.Start.Replace, "replace", false, "detach another tool's XDP program from the interfaces instead of refusing to start [HBF_REPLACE]")
	fs.BoolVar(&cfg.Start.DetachOnExit, "detach-on-exit", false, "remove enforcement when stopping cleanly (demos, tests); by default it stays until `hbf uninstall` [HBF_DETACH_ON_EXIT]")
	fs.StringVar(&cfg.Start.Socket, "socket", cfg.Start.Socket, "unix socket of the API the CLI talks to (root only) [HBF_SOCKET]")
	fs.IntVar(&cfg.Settings.Rules.MinBitsV4, "min-prefix-v4", cfg.Settings.Rules.MinBitsV4, "refuse IPv4 blocks wider than this prefix length [HBF_MIN_PREFIX_V4]")
	fs.IntVar(&cfg.Settings.Rules.MinBitsV6, "min-prefix-v6", cfg.Settings.Rules.MinBitsV6, "refuse IPv6 blocks wider than this prefix length [HBF_MIN_PREFIX_V6]")
	fl := &cfg.Start.Fleet
	fs.StringSliceVar(&fl.Etcd, "fleet-etcd", nil, "etcd client URLs of the fleet to share blocks with, repeatable; none: this host shares nothing [HBF_FLEET_ETCD]")
	fs.StringVar(&fl.Prefix, "fleet-prefix", fl.Prefix, "key prefix of the fleet in etcd [HBF_FLEET_PREFIX]")
	fs.StringVar(&fl.Node, "node-name", "", "this host's name in the fleet (default: the host name) [HBF_NODE_NAME]")
	fs.StringVar(&fl.CA, "fleet-ca", "", "CA certificate (PEM) that signed etcd's [HBF_FLEET_CA]")
	fs.StringVar(&fl.Cert, "fleet-cert", "", "this node's client certificate (PEM) for etcd [HBF_FLEET_CERT]")
	fs.StringVar(&fl.Key, "fleet-key", "", "the key of --fleet-cert [HBF_FLEET_KEY]")
	fs.StringVar(&fl.User, "fleet-user", "", "etcd user of this node [HBF_FLEET_USER]")
	fs.StringVar(&fl.PasswordFile, "fleet-password-file", "", "file holding the password of --fleet-user [HBF_FLEET_PASSWORD_FILE]")
	fs.StringVar(&fl.AdminCert, "fleet-admin-cert", "", "the fleet's admin client certificate: this node may issue hbf allow --fleet and hbf unblock --fleet [HBF_FLEET_ADMIN_CERT]")
	fs.StringVar(&fl.AdminKey, "fleet-admin-key", "", "the key of --fleet-admin-cert [HBF_FLEET_ADMIN_KEY]")
	fs.StringVar(&fl.AdminUser, "fleet-admin-user", "", "the fleet's admin etcd user, instead of a certificate [HBF_FLEET_ADMIN_USER]")
	fs.StringVar(&fl.AdminPasswordFile, "fleet-admin-password-file", "", "file holding the password of --fleet-admin-user [HBF_FLEET_ADMIN_PASSWORD_FILE]")
	fs.StringVar(&d.fleetShare, "fleet-share", "scans,limits,manual", "what this host publishes: its scan blocks (scans), its blocks for connection limits (limits), its blocks given with --fleet (manual), comma-separated, or none [HBF_FLEET_SHARE]")
	fs.Var(prefixesValue{&fl.MemberPrefixes}, "fleet-member-prefixes", "the fleet's members' addresses are never blocked here only inside these prefixes (CIDRs, repeatable); none: any global unicast address a member publishes, 16 a member at most [HBF_FLEET_MEMBER_PREFIXES]")
	fs.IntVar(&fl.MinReporters, "fleet-min-reporters", fl.MinReporters, "a scan block of the fleet applies here once this many nodes saw the source scan [HBF_FLEET_MIN_REPORTERS]")
	fs.IntVar(&fl.AcceptPerMinute, "fleet-accept-per-minute", fl.AcceptPerMinute, "new fleet blocks applied here per minute from any one node at most; 0: no limit [HBF_FLEET_ACCEPT_PER_MINUTE]")
	fs.IntVar(&fl.Quota, "fleet-quota", fl.Quota, "fleet blocks of any one node in force here at most; 0: no limit [HBF_FLEET_QUOTA]")
	cs := &cfg.Start.CrowdSec
	fs.StringVar(&cs.LAPI, "crowdsec-lapi", "", "URL of a CrowdSec Local API whose ban decisions hbf enforces, as http://127.0.0.1:8080 [HBF_CROWDSEC_LAPI]")
	fs.StringVar(&cs.KeyFile, "crowdsec-key-file", "", "file holding this host's bouncer key (cscli bouncers add NAME -o raw), unless --crowdsec-cert identifies it; one key per host [HBF_CROWDSEC_KEY_FILE]")
	fs.StringVar(&cs.CA, "crowdsec-ca", "", "CA certificate (PEM) that signed LAPI's [HBF_CROWDSEC_CA]")
	fs.StringVar(&cs.Cert, "crowdsec-cert", "", "client certificate (PEM) for LAPI; with one whose OU LAPI takes for bouncers, no key file is needed [HBF_CROWDSEC_CERT]")
	fs.StringVar(&cs.Key, "crowdsec-key", "", "the key of --crowdsec-cert [HBF_CROWDSEC_KEY]")
	fs.Var(durationValue{&cs.Interval}, "crowdsec-interval", "how often LAPI's decision stream is read [HBF_CROWDSEC_INTERVAL]")
	fs.Var(durationValue{&cs.Resync}, "crowdsec-resync", "how often the whole snapshot of LAPI's decisions is read again, making good an answer lost on the way [HBF_CROWDSEC_RESYNC]")
	fs.StringSliceVar(&cs.Origins, "crowdsec-origins", nil, "enforce only decisions of these origins (cscli, crowdsec, CAPI, lists …) [HBF_CROWDSEC_ORIGINS]")
	fs.StringSliceVar(&cs.ScenariosContaining, "crowdsec-scenarios-containing", nil, "enforce only decisions whose scenario holds one of these [HBF_CROWDSEC_SCENARIOS_CONTAINING]")
	fs.StringSliceVar(&cs.ScenariosNotContaining, "crowdsec-scenarios-not-containing", nil, "never enforce decisions whose scenario holds one of these [HBF_CROWDSEC_SCENARIOS_NOT_CONTAINING]")
	fs.IntVar(&cs.MinPrefixV4, "crowdsec-min-prefix-v4", cs.MinPrefixV4, "refuse CrowdSec's IPv4 decisions wider than this prefix length [HBF_CROWDSEC_MIN_PREFIX_V4]")
	fs.IntVar(&cs.MinPrefixV6, "crowdsec-min-prefix-v6", cs.MinPrefixV6, "refuse CrowdSec's IPv6 decisions wider than this prefix length [HBF_CROWDSEC_MIN_PREFIX_V6]")
	fs.IntVar(&cs.MaxPerOrigin, "crowdsec-max-per-origin", cs.MaxPerOrigin, "decisions in force of any one origin at most; past it they are refused and counted; 0: no cap [HBF_CROWDSEC_MAX_PER_ORIGIN]")
	fs.StringVar(&cs.MachineID, "crowdsec-machine-id", "", "a machine registered with cscli machines add: hbf pushes its blocks to LAPI as alerts [HBF_CROWDSEC_MACHINE_ID]")
	fs.StringVar(&cs.PasswordFile, "crowdsec-password-file", "", "file holding the password of --crowdsec-machine-id [HBF_CROWDSEC_PASSWORD_FILE]")
	fs.StringSliceVar(&cs.Push, "crowdsec-push", cs.Push, "which of hbf's blocks go to LAPI as alerts: limits (counted on completed handshakes), scans (made of SYNs anyone can forge), or none [HBF_CROWDSEC_PUSH]")
	fs.Var(prefixesValue{&cfg.Settings.Allow}, "allow", "IP or CIDR never to block, repeatable; the host's own addresses, loopback and the SSH client are always allowed [HBF_ALLOW]")
	return d
}

// resolve completes the settings the command line left from the
// environment, then the configuration file, and checks them all.
// findIface looks up the default route's interface when none is named.
func (d *daemonFlags) resolve(getenv func(string) string, findIface bool) (daemon.Config, error) {
	if err := applyEnv(d.fs, getenv); err != nil {
		return daemon.Config{}, err
	}
	path, required := d.config, d.config != ""
	if !required {
		path = defaultConfigFile
	}
	if _, err := os.Stat(path); err == nil || required {
		if err := applyFile(d.fs, path); err != nil {
			return daemon.Config{}, err
		}
		d.cfg.Settings.ConfigFile = path
	}

	cfg := d.cfg
	var err error
	if cfg.Start.Attach, err = daemon.ParseAttach(d.attach); err != nil {
		return cfg, fmt.Errorf("--attach: %w", err)
	}
	switch d.tcxAnchor {
	case "head", "tail":
		cfg.Start.TCXTail = d.tcxAnchor == "tail"
	default:
		return cfg, fmt.Errorf("--tcx-anchor: %q is not an anchor: use head or tail", d.tcxAnchor)
	}
	if cfg.Start.XDPMode, err = dataplane.ParseXDPMode(d.xdpMode); err != nil {
		return cfg, fmt.Errorf("--xdp-mode: %w", err)
	}
	if cfg.Start.LogFormat, err = report.ParseFormat(d.logFormat); err != nil {
		return cfg, fmt.Errorf("--log-format: %w", err)
	}
	if cfg.Settings.Monitor, err = daemon.ParseMode(d.mode); err != nil {
		return cfg, fmt.Errorf("--mode: %w", err)
	}
	if cfg.Settings.UDPScans, err = daemon.ParseUDPScans(d.udpScans); err != nil {
		return cfg, fmt.Errorf("--udp-scans %w", err)
	}
	if cfg.Settings.CountClosed, err = daemon.ParseCountPorts(d.countPorts); err != nil {
		return cfg, fmt.Errorf("--count-ports %w", err)
	}
	if cfg.Settings.ConnLog, err = daemon.ParseConnLog(d.connLog); err != nil {
		return cfg, fmt.Errorf("--log-connections %w", err)
	}
	fl := &cfg.Start.Fleet
	if err := daemon.ParseFleetShare(d.fleetShare, fl); err != nil {
		return cfg, fmt.Errorf("--fleet-share %w", err)
	}
	if fl.Node == "" && fl.Enabled() {
		if fl.Node, err = os.Hostname(); err != nil {
			return cfg, fmt.Errorf("--node-name: the host name is unknown (%v): name the node", err)
		}
	}
	if len(cfg.Start.Ifaces) == 0 && findIface {
		name, err := hostnet.DefaultRouteInterface()
		if errors.Is(err, hostnet.ErrNoDefaultRoute) {
			return cfg, errors.New("no default route to take the interface from: name it with --iface")
		}
		if err != nil {
			return cfg, fmt.Errorf("--iface: %w", err)
		}
		cfg.Start.Ifaces = []string{name}
	}
	return cfg, cfg.Validate()
}

// flagValues are the values the command line gave the daemon's flags,
// parsed once by cobra: the start and every reload build the
// configuration from them, the environment and the file read again.
type flagValues map[string][]string

func commandLine(fs *pflag.FlagSet) flagValues {
	out := flagValues{}
	fs.Visit(func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			out[f.Name] = sv.GetSlice()
		} else {
			out[f.Name] = []string{f.Value.String()}
		}
	})
	return out
}

// daemonConfig builds a complete configuration: the command line's
// values, then the environment's and the file's.
func daemonConfig(cmdline flagValues, e env) (daemon.Config, error) {
	fs := pflag.NewFlagSet("daemon", pflag.ContinueOnError)
	d := newDaemonFlags(fs)
	for name, vals := range cmdline {
		f := fs.Lookup(name)
		if f == nil {
			continue // a flag of the root's, such as -o
		}
		switch v := f.Value.(type) {
		case pflag.SliceValue:
			if err := v.Replace(vals); err != nil {
				return daemon.Config{}, err
			}
			f.Changed = true
		default:
			if err := fs.Set(name, vals[0]); err != nil {
				return daemon.Config{}, err
			}
		}
	}
	cfg, err := d.resolve(e.getenv, true)
	if err != nil {
		return cfg, err
	}
	cfg.Start.SSHConnection = e.getenv("SSH_CONNECTION")
	cfg.Deps.Version = version
	cfg.Deps.Stdout = e.stdout
	cfg.Deps.Logger = slog.New(slog.NewTextHandler(e.stderr, nil))
	return cfg, nil
}

func newDaemonCmd(e env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Protect interfaces: report connections, detect and block port scans",
		Long: `Attach hbf's XDP program to the interfaces and run until stopped (SIGINT,
SIGTERM, hbf stop) or until --timeout. Every setting comes from, in this order:
its flag, the environment variable in brackets, the configuration file (a YAML
key named as the flag), its default. SIGHUP or hbf reload re-reads the
configuration file and every list, and reopens the log file.`,
		Example: `  sudo hbf daemon --iface eth0
  sudo hbf daemon --iface eth0 --max-ports 10 --window 30s --log-format json
  sudo HBF_IFACE=eth0 HBF_BLOCKLIST_FILE_PATH=/etc/hbf/blocklist.txt hbf daemon
  sudo hbf daemon --config /etc/hbf/hbf.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmdline := commandLine(cmd.Flags())
			cfg, err := daemonConfig(cmdline, e)
			if err != nil {
				return usageError{err}
			}
			cfg.Deps.Reload = func() (daemon.Config, error) { return daemonConfig(cmdline, e) }
			return e.runDaemon(cmd.Context(), cfg)
		},
	}
	newDaemonFlags(cmd.Flags())
	return cmd
}

func newConfigCmd(e env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with hbf's configuration file",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Check a configuration file without a daemon: keys, values, and the lists it names",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			fs := pflag.NewFlagSet("daemon", pflag.ContinueOnError)
			d := newDaemonFlags(fs)
			d.config = args[0]
			// The file alone: neither this shell's environment nor its routes.
			cfg, err := d.resolve(func(string) string { return "" }, false)
			if err != nil && !errors.Is(err, daemon.ErrNoInterface) {
				return err
			}
			if err := daemon.CheckLists(cfg.Settings); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: ok\n", args[0])
			return nil
		},
	})
	return cmd
}
