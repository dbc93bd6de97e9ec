// Package daemon wires hbf together and runs it: the data plane, the event
// reporting, the metrics server, and the start and stop of it all.
package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/report"
)

// Config is everything the daemon needs; the command line builds it.
type Config struct {
	Ifaces        []string // interfaces to protect; at least one
	MaxPorts      int
	Window        time.Duration
	BlockDuration time.Duration // 0: scan blocks never expire
	Monitor       bool          // report scans as "would block", block nothing for them
	IgnorePorts   []uint16      // never counted toward a scan
	// ScanBlocksPerMinute bounds the blocks the program makes for scans
	// (spoofed decoys); 0: no limit.
	ScanBlocksPerMinute int
	ScanPrefixV6        int // off-link IPv6 scanners are counted and blocked per this prefix
	// ResolvConf is read for the DNS resolvers, which are never blocked.
	ResolvConf    string
	Timeout       time.Duration // 0: run until stopped
	XDPMode       dataplane.XDPMode
	PinPath       string
	StateDir      string
	MetricsAddr   string // "" disables the metrics server
	LogFormat     report.Format
	LogFile       string        // "": events go to Stdout only
	ConnLog       ConnLog       // which connection lines are written
	Blocklists    []string      // list files, watched
	BlocklistURLs []string      // list feeds, fetched at start and every FeedRefresh
	FeedRefresh   time.Duration // how often feeds are fetched again
	Allow         []netip.Prefix
	Socket        string            // the API's unix socket
	Rules         policy.Rules      // what operators may block
	Escalation    policy.Escalation // longer blocks for repeat scanners
	// Replace detaches another tool's XDP program from the interfaces instead
	// of refusing to start.
	Replace bool
	// DetachOnExit removes enforcement (links and pins) when the daemon
	// stops cleanly. Off by default: every exit keeps the host protected.
	DetachOnExit bool
	// SSHConnection is $SSH_CONNECTION: its client is allowlisted so that
	// starting hbf over SSH cannot lock the operator out.
	SSHConnection string

	// ConfigFile is the file the settings were read from, if any.
	ConfigFile string
	// Reload rebuilds the configuration as the start did, for SIGHUP and
	// hbf reload.
	Reload func() (Config, error)

	Version string
	Stdout  io.Writer    // event lines
	Logger  *slog.Logger // diagnostics
}

// Defaults are the settings a bare `hbf daemon` runs with.
var Defaults = Config{
	MaxPorts:      3,
	Window:        60 * time.Second,
	BlockDuration: time.Hour,
	XDPMode:       dataplane.XDPAuto,
	PinPath:       "/sys/fs/bpf/hbf",
	StateDir:      "/var/lib/hbf",
	MetricsAddr:   "127.0.0.1:9717",
	LogFormat:     report.Text,
	Socket:        api.DefaultSocket,
	FeedRefresh:   time.Hour,
	Escalation:    policy.DefaultEscalation,
	Rules:         policy.DefaultRules,

	ScanBlocksPerMinute: 30,
	ScanPrefixV6:        64,
	ResolvConf:          "/etc/resolv.conf",
}

func (c Config) settings() dataplane.Settings {
	return dataplane.Settings{MaxPorts: c.MaxPorts, Window: c.Window, BlockDuration: c.BlockDuration,
		Monitor: c.Monitor, IgnorePorts: c.IgnorePorts,
		MaxBlocksPerMinute: c.ScanBlocksPerMinute, IPv6ScanPrefix: c.ScanPrefixV6}
}

// ModeName is "monitor" or "enforce".
func ModeName(monitor bool) string {
	if monitor {
		return "monitor"
	}
	return "enforce"
}

// ParseMode reads enforce or monitor.
func ParseMode(s string) (monitor bool, err error) {
	switch s {
	case "enforce":
		return false, nil
	case "monitor":
		return true, nil
	}
	return false, fmt.Errorf("%q is not a mode: use enforce or monitor", s)
}

// ErrNoInterface: no --iface, and none found.
var ErrNoInterface = errors.New("--iface: no interface to protect")

// Validate names every setting that cannot work, as a flag would.
func (c Config) Validate() error {
	var errs []error
	if len(c.Ifaces) == 0 {
		errs = append(errs, ErrNoInterface)
	}
	if c.MaxPorts < 1 || c.MaxPorts > dataplane.MaxPortsLimit {
		errs = append(errs, fmt.Errorf("--max-ports %d: must be between 1 and %d", c.MaxPorts, dataplane.MaxPortsLimit))
	}
	if c.Window < time.Millisecond || c.Window > 24*time.Hour {
		errs = append(errs, fmt.Errorf("--window %s: must be between 1ms and 24h", c.Window))
	}
	if c.BlockDuration < 0 {
		errs = append(errs, fmt.Errorf("--block-duration %s: must not be negative (0 blocks for good)", c.BlockDuration))
	}
	if c.ScanBlocksPerMinute < 0 || c.ScanBlocksPerMinute > 1_000_000 {
		errs = append(errs, fmt.Errorf("--scan-blocks-per-minute %d: must be between 0 (no limit) and 1000000", c.ScanBlocksPerMinute))
	}
	if c.ScanPrefixV6 < dataplane.MinIPv6ScanPrefix || c.ScanPrefixV6 > 128 {
		errs = append(errs, fmt.Errorf("--scan-prefix-v6 %d: must be between %d and 128 (per address)", c.ScanPrefixV6, dataplane.MinIPv6ScanPrefix))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: must not be negative (0 runs until stopped)", c.Timeout))
	}
	if c.PinPath == "" {
		errs = append(errs, errors.New("--pin-path: must name a folder on a bpffs"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("--state-dir: must name a folder"))
	}
	if c.Escalation.Forget < 0 {
		errs = append(errs, fmt.Errorf("--escalation-forget %s: must not be negative", c.Escalation.Forget))
	}
	if c.FeedRefresh < time.Second {
		errs = append(errs, fmt.Errorf("--feed-refresh %s: must be at least 1s", c.FeedRefresh))
	}
	for _, u := range c.BlocklistURLs {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			errs = append(errs, fmt.Errorf("--blocklist-url %q: must be an http:// or https:// URL", u))
		}
	}
	if c.Socket == "" {
		errs = append(errs, errors.New("--socket: must name a path"))
	}
	if c.Rules.MinBitsV4 < 1 || c.Rules.MinBitsV4 > 32 {
		errs = append(errs, fmt.Errorf("--min-prefix-v4 %d: must be between 1 and 32", c.Rules.MinBitsV4))
	}
	if c.Rules.MinBitsV6 < 1 || c.Rules.MinBitsV6 > 128 {
		errs = append(errs, fmt.Errorf("--min-prefix-v6 %d: must be between 1 and 128", c.Rules.MinBitsV6))
	}
	return errors.Join(errs...)
}
