package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/hbf-firewall/hbf/internal/daemon"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/report"
)

func newDaemonCmd(e env) *cobra.Command {
	cfg := daemon.Defaults
	var xdpMode, logFormat, connLog, mode string
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Protect interfaces: report connections, detect and block port scans",
		Long: `Attach hbf's XDP program to the interfaces and run until stopped (SIGINT,
SIGTERM) or until --timeout. Every setting can also come from the environment
variable in brackets; a flag beats its variable.`,
		Example: `  sudo hbf daemon --iface eth0
  sudo hbf daemon --iface eth0 --max-ports 10 --window 30s --log-format json
  sudo HBF_IFACE=eth0 HBF_BLOCKLIST_FILE_PATH=/etc/hbf/blocklist.txt hbf daemon`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags(), e.getenv); err != nil {
				return usageError{err}
			}
			var err error
			if cfg.XDPMode, err = dataplane.ParseXDPMode(xdpMode); err != nil {
				return usageError{fmt.Errorf("--xdp-mode: %w", err)}
			}
			if cfg.LogFormat, err = report.ParseFormat(logFormat); err != nil {
				return usageError{fmt.Errorf("--log-format: %w", err)}
			}
			if cfg.Monitor, err = daemon.ParseMode(mode); err != nil {
				return usageError{fmt.Errorf("--mode: %w", err)}
			}
			if cfg.ConnLog, err = daemon.ParseConnLog(connLog); err != nil {
				return usageError{fmt.Errorf("--log-connections %w", err)}
			}
			if len(cfg.Ifaces) == 0 {
				name, err := daemon.DefaultRouteInterface()
				if err != nil {
					return usageError{err}
				}
				cfg.Ifaces = []string{name}
			}
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			cfg.SSHConnection = e.getenv("SSH_CONNECTION")
			cfg.Version = version
			cfg.Stdout = e.stdout
			cfg.Logger = slog.New(slog.NewTextHandler(e.stderr, nil))
			return e.runDaemon(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&cfg.Ifaces, "iface", nil, "interface to protect, repeatable (default: the interface of the default route) [HBF_IFACE]")
	f.IntVar(&cfg.MaxPorts, "max-ports", cfg.MaxPorts, fmt.Sprintf("a source trying more than this many distinct ports within --window is a scanner (1-%d) [HBF_MAX_PORTS]", dataplane.MaxPortsLimit))
	f.Var(durationValue{&cfg.Window}, "window", "sliding window of the scan threshold: a duration or seconds [HBF_TIME_THRESHOLD]")
	f.StringVar(&mode, "mode", "enforce", "enforce: block scanners; monitor: report them as \"would block\" (manual and list blocks stay in force) [HBF_MODE]")
	f.Var(portsValue{&cfg.IgnorePorts}, "ignore-ports", "ports (and ranges) that never count toward a scan nor are a reason to block, e.g. 80,443 [HBF_IGNORE_PORTS]")
	f.Var(durationValue{&cfg.BlockDuration}, "block-duration", "how long a scanner stays blocked; 0 blocks for good [HBF_BLOCK_DURATION]")
	f.Var(durationValue{&cfg.Timeout}, "timeout", "run this long, then exit cleanly; 0 runs until stopped [HBF_TIMEOUT_SECONDS]")
	f.StringVar(&xdpMode, "xdp-mode", string(cfg.XDPMode), "auto, native or generic; auto falls back to generic when the driver has no native XDP [HBF_XDP_MODE]")
	f.StringVar(&cfg.PinPath, "pin-path", cfg.PinPath, "bpffs folder for hbf's pinned maps and links [HBF_PIN_PATH]")
	f.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "folder for hbf's state and its single-instance lock [HBF_STATE_DIR]")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "address of the Prometheus endpoint /metrics; empty disables it [HBF_METRICS_ADDR]")
	f.StringVar(&logFormat, "log-format", string(cfg.LogFormat), "event lines as text or json [HBF_LOG_FORMAT]")
	f.StringVar(&connLog, "log-connections", "all", "connection lines: all, off, or rate=N/s (then a line counts those held back; counters stay exact) [HBF_LOG_CONNECTIONS]")
	f.StringVar(&cfg.LogFile, "log-file", "", "also append event lines to this file [HBF_LOG_FILE]")
	f.StringVar(&cfg.Blocklist, "blocklist", "", "file of IPs and CIDRs to block at start, one per line, # comments [HBF_BLOCKLIST_FILE_PATH]")
	f.BoolVar(&cfg.DetachOnExit, "detach-on-exit", false, "remove enforcement when stopping cleanly (demos, tests); by default it stays until `hbf uninstall` [HBF_DETACH_ON_EXIT]")
	f.StringVar(&cfg.Socket, "socket", cfg.Socket, "unix socket of the API the CLI talks to (root only) [HBF_SOCKET]")
	f.IntVar(&cfg.Rules.MinBitsV4, "min-prefix-v4", cfg.Rules.MinBitsV4, "refuse IPv4 blocks wider than this prefix length [HBF_MIN_PREFIX_V4]")
	f.IntVar(&cfg.Rules.MinBitsV6, "min-prefix-v6", cfg.Rules.MinBitsV6, "refuse IPv6 blocks wider than this prefix length [HBF_MIN_PREFIX_V6]")
	f.Var(prefixesValue{&cfg.Allow}, "allow", "IP or CIDR never to block, repeatable; the host's own addresses, loopback and the SSH client are always allowed [HBF_ALLOW]")
	return cmd
}
