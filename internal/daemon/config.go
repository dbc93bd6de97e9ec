// Package daemon wires hbf together and runs it: the data plane, the event
// reporting, the metrics server, and the start and stop of it all.
package daemon

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/fleet"
	"github.com/hbf-firewall/hbf/internal/limit"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/protect"
	"github.com/hbf-firewall/hbf/internal/report"
)

// Config is everything the daemon needs; the command line builds it.
type Config struct {
	Start    Start    // fixed while the daemon runs
	Settings Settings // what a reload may change
	Deps     Deps
}

// Start is what only a restart changes: what the daemon holds open
// (interfaces, pins, sockets, ports) or took from how it was started. A
// reload that names other values says so, with the flag of each field.
type Start struct {
	Ifaces      []string          `flag:"iface"`      // interfaces to protect; at least one
	Attach      Attach            `flag:"attach"`     // the hook the program runs at
	TCXTail     bool              `flag:"tcx-anchor"` // at the tail of TC ingress, not the head
	XDPMode     dataplane.XDPMode `flag:"xdp-mode"`
	PinPath     string            `flag:"pin-path"`
	StateDir    string            `flag:"state-dir"`
	Socket      string            `flag:"socket"`       // the API's unix socket
	MetricsAddr string            `flag:"metrics-addr"` // "" disables the metrics server
	LogFormat   report.Format     `flag:"log-format"`
	Timeout     time.Duration     `flag:"timeout"` // 0: run until stopped
	// DetachOnExit removes enforcement (links and pins) when the daemon
	// stops cleanly. Off by default: every exit keeps the host protected.
	DetachOnExit bool `flag:"detach-on-exit"`
	// Replace detaches another tool's XDP program from the interfaces instead
	// of refusing to start.
	Replace bool `flag:"replace"`
	// MaxBlocks and MaxBlockPrefixes size the kernel's block maps; a new
	// size at a restart copies every block into maps of that size.
	MaxBlocks        int `flag:"max-blocks"`
	MaxBlockPrefixes int `flag:"max-block-prefixes"`
	// SSHConnection is $SSH_CONNECTION: its client is allowlisted so that
	// starting hbf over SSH cannot lock the operator out.
	SSHConnection string
	Fleet         Fleet
	CrowdSec      CrowdSec
}

// CrowdSec is how this host enforces the decisions of a CrowdSec Local
// API (LAPI), and reports its own detections to it. Without a LAPI it
// does neither.
type CrowdSec struct {
	LAPI    string `flag:"crowdsec-lapi"`     // http(s)://host:port
	KeyFile string `flag:"crowdsec-key-file"` // holds the bouncer's API key; none: Cert identifies it
	// TLS, as LAPI serves it.
	CA   string `flag:"crowdsec-ca"`
	Cert string `flag:"crowdsec-cert"`
	Key  string `flag:"crowdsec-key"`
	// Interval between two reads of the decision stream; Resync between
	// two reads of the whole snapshot, which makes good what an answer
	// lost on the way would otherwise lose for good.
	Interval time.Duration `flag:"crowdsec-interval"`
	Resync   time.Duration `flag:"crowdsec-resync"`
	// The stream's filters.
	Origins                []string `flag:"crowdsec-origins"`
	ScenariosContaining    []string `flag:"crowdsec-scenarios-containing"`
	ScenariosNotContaining []string `flag:"crowdsec-scenarios-not-containing"`
	// What a decision may block: nothing wider than these prefixes, and at
	// most MaxPerOrigin decisions in force of any one origin.
	MinPrefixV4  int `flag:"crowdsec-min-prefix-v4"`
	MinPrefixV6  int `flag:"crowdsec-min-prefix-v6"`
	MaxPerOrigin int `flag:"crowdsec-max-per-origin"`
	// A machine registered with cscli machines add, to push hbf's blocks
	// to LAPI as alerts; which blocks (Push: limits, scans).
	MachineID    string   `flag:"crowdsec-machine-id"`
	PasswordFile string   `flag:"crowdsec-password-file"`
	Push         []string `flag:"crowdsec-push"`
}

// Enabled says whether this host reads a LAPI's decisions.
func (c CrowdSec) Enabled() bool { return c.LAPI != "" }

// Fleet is how this host shares blocks with others through etcd. Without
// endpoints it shares nothing: hbf is the single host's firewall.
type Fleet struct {
	Etcd   []string `flag:"fleet-etcd"`   // client URLs
	Prefix string   `flag:"fleet-prefix"` // of every key
	Node   string   `flag:"node-name"`    // this host's name in the fleet
	// TLS with a client certificate, and etcd's own authentication.
	CA           string `flag:"fleet-ca"`
	Cert         string `flag:"fleet-cert"`
	Key          string `flag:"fleet-key"`
	User         string `flag:"fleet-user"`
	PasswordFile string `flag:"fleet-password-file"`
	// The admin credential, on the nodes allowed to issue fleet-wide
	// allows and unblocks.
	AdminCert         string `flag:"fleet-admin-cert"`
	AdminKey          string `flag:"fleet-admin-key"`
	AdminUser         string `flag:"fleet-admin-user"`
	AdminPasswordFile string `flag:"fleet-admin-password-file"`
	// What this host publishes: its scan blocks, its blocks for
	// connection limits, its --fleet manual ones.
	ShareScans  bool `flag:"fleet-share"`
	ShareLimits bool `flag:"fleet-share"`
	ShareManual bool `flag:"fleet-share"`
	// MemberPrefixes bound the addresses of the members this host
	// protects; none: any global unicast address.
	MemberPrefixes []netip.Prefix `flag:"fleet-member-prefixes"`
	// What it accepts of each other node.
	MinReporters    int `flag:"fleet-min-reporters"`
	AcceptPerMinute int `flag:"fleet-accept-per-minute"`
	Quota           int `flag:"fleet-quota"`
}

// Enabled says whether this host is in a fleet.
func (f Fleet) Enabled() bool { return len(f.Etcd) > 0 }

// Admin says whether this host holds the fleet's admin credential.
func (f Fleet) Admin() bool { return f.AdminCert != "" || f.AdminUser != "" }

// Settings are what a reload (SIGHUP, hbf reload) re-reads and applies.
type Settings struct {
	MaxPorts      int
	Window        time.Duration
	BlockDuration time.Duration // 0: scan blocks never expire
	Monitor       bool          // report scans as "would block", block nothing for them
	IgnorePorts   ports.List    // never counted toward a scan
	// UDPScans: UDP datagrams to closed ports count, and a UDP scan is
	// blocked (block), reported only (report), or nothing counts (off).
	UDPScans dataplane.UDPScans
	// CountClosed: a SYN counts only on a closed port (--count-ports
	// closed); otherwise on any port (all).
	CountClosed bool
	// ScanBlocksPerMinute bounds the blocks the program makes for scans
	// (spoofed decoys); 0: no limit.
	ScanBlocksPerMinute int
	ScanPrefixV6        int // off-link IPv6 scanners are counted and blocked per this prefix
	// Limits are the connection limits, one a port (--limit).
	Limits []limit.Limit
	// ResolvConf is read for the DNS resolvers, which are never blocked.
	ResolvConf    string
	LogFile       string        // "": events go to Stdout only
	ConnLog       ConnLog       // which connection lines are written
	Blocklists    []string      // list files, watched
	BlocklistURLs []string      // list feeds, fetched at start and every FeedRefresh
	FeedRefresh   time.Duration // how often feeds are fetched again
	Allow         []netip.Prefix
	Rules         policy.Rules      // what operators may block
	Escalation    policy.Escalation // longer blocks for repeat scanners
	// ConfigFile is the file the settings were read from, if any.
	ConfigFile string
}

// Deps are what the daemon is given to work with rather than told.
type Deps struct {
	Version string
	Stdout  io.Writer    // event lines
	Logger  *slog.Logger // diagnostics
	// Reload rebuilds the configuration as the start did, for SIGHUP and
	// hbf reload.
	Reload func() (Config, error)
	// Lookup resolves names: etcd's endpoints, the NTP servers. Nil: as
	// the host does.
	Lookup protect.Lookup
	// Root is the host's file system, where the time daemons' configuration
	// and the firmware's names are read. Nil: the host's own.
	Root fs.FS
}

// Defaults are the settings a bare `hbf daemon` runs with.
var Defaults = Config{
	Start: Start{
		Attach:  AttachXDP,
		XDPMode: dataplane.XDPAuto,
		PinPath: "/sys/fs/bpf/hbf",

		MaxBlocks:        dataplane.DefaultCapacity.Blocks,
		MaxBlockPrefixes: dataplane.DefaultCapacity.BlockPrefixes,
		StateDir:         "/var/lib/hbf",
		MetricsAddr:      "127.0.0.1:9717",
		LogFormat:        report.Text,
		Socket:           api.DefaultSocket,
		Fleet: Fleet{Prefix: "/hbf", ShareScans: true, ShareLimits: true, ShareManual: true, MinReporters: 1,
			AcceptPerMinute: 60, Quota: 10000},
		CrowdSec: CrowdSec{Interval: 10 * time.Second, Resync: 5 * time.Minute, MinPrefixV4: 16, MinPrefixV6: 48,
			MaxPerOrigin: 200000, Push: []string{"limits"}},
	},
	Settings: Settings{
		MaxPorts:      3,
		Window:        60 * time.Second,
		BlockDuration: time.Hour,
		FeedRefresh:   time.Hour,
		Escalation:    policy.DefaultEscalation,
		Rules:         policy.DefaultRules,

		UDPScans:            dataplane.UDPBlock,
		ScanBlocksPerMinute: 30,
		ScanPrefixV6:        64,
		ResolvConf:          "/etc/resolv.conf",
	},
}

// program is what the XDP program runs with on a host whose ephemeral
// ports are ephemeral.
func (s Settings) program(ephemeral [2]uint16) dataplane.Settings {
	return dataplane.Settings{MaxPorts: s.MaxPorts, Window: s.Window, BlockDuration: s.BlockDuration,
		Monitor: s.Monitor, IgnorePorts: s.IgnorePorts, UDPScans: s.UDPScans, CountClosed: s.CountClosed,
		Ephemeral: ephemeral, MaxBlocksPerMinute: s.ScanBlocksPerMinute, IPv6ScanPrefix: s.ScanPrefixV6,
		Limits: s.Limits}
}

// ParseFleetShare reads --fleet-share: what this host publishes, a list of
// scans, limits and manual, or none.
func ParseFleetShare(s string, f *Fleet) error {
	f.ShareScans, f.ShareLimits, f.ShareManual = false, false, false
	if s == "none" {
		return nil
	}
	for _, class := range strings.Split(s, ",") {
		switch strings.TrimSpace(class) {
		case "scans":
			f.ShareScans = true
		case "limits":
			f.ShareLimits = true
		case "manual":
			f.ShareManual = true
		default:
			return fmt.Errorf("%q: %q is not a class of blocks; list scans, limits and manual (comma-separated), or none", s, class)
		}
	}
	return nil
}

// ParseCountPorts reads --count-ports: all or closed.
func ParseCountPorts(s string) (closed bool, err error) {
	switch s {
	case "all":
		return false, nil
	case "closed":
		return true, nil
	}
	return false, fmt.Errorf("%q: must be all (every port counts) or closed (only ports nothing serves)", s)
}

// CountPortsName is --count-ports' value for closed.
func CountPortsName(closed bool) string {
	if closed {
		return "closed"
	}
	return "all"
}

// ParseUDPScans reads --udp-scans: block, report or off.
func ParseUDPScans(s string) (dataplane.UDPScans, error) {
	switch v := dataplane.UDPScans(s); v {
	case dataplane.UDPBlock, dataplane.UDPReport, dataplane.UDPOff:
		return v, nil
	}
	return "", fmt.Errorf("%q: must be block, report (detect, never block) or off", s)
}

// restartOnly names the fields of next a running daemon started as old
// cannot take: they wait for the next start.
func restartOnly(old, next Start) []string {
	return changedFlags(reflect.ValueOf(old), reflect.ValueOf(next))
}

// changedFlags names the flags of the fields that differ between two
// structs, looking into fields that are structs without a flag of their
// own; fields of one flag name it once.
func changedFlags(o, n reflect.Value) []string {
	var changed []string
	for i := range o.NumField() {
		f := o.Type().Field(i)
		flag := f.Tag.Get("flag")
		switch {
		case flag == "" && f.Type.Kind() == reflect.Struct:
			changed = append(changed, changedFlags(o.Field(i), n.Field(i))...)
		case flag != "" && !reflect.DeepEqual(o.Field(i).Interface(), n.Field(i).Interface()) && !slices.Contains(changed, flag):
			changed = append(changed, flag)
		}
	}
	return changed
}

// ModeName is "monitor" or "enforce".
func ModeName(monitor bool) string {
	if monitor {
		return "monitor"
	}
	return "enforce"
}

// Attach is the hook the daemon runs its program at, on every interface it
// protects: the program's settings, block budget and hints are shared by
// all of them.
type Attach string

const (
	AttachXDP  Attach = "xdp"  // hbf's own XDP link: earliest and cheapest
	AttachTCX  Attach = "tcx"  // TC ingress through TCX, beside other programs
	AttachAuto Attach = "auto" // XDP where every hook is free, else TCX
)

// ParseAttach reads xdp, tcx or auto.
func ParseAttach(s string) (Attach, error) {
	switch a := Attach(s); a {
	case AttachXDP, AttachTCX, AttachAuto:
		return a, nil
	}
	return "", fmt.Errorf("%q is not a hook: use xdp, tcx or auto", s)
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
	if len(c.Start.Ifaces) == 0 {
		errs = append(errs, ErrNoInterface)
	}
	if c.Settings.MaxPorts < 1 || c.Settings.MaxPorts > dataplane.MaxPortsLimit {
		errs = append(errs, fmt.Errorf("--max-ports %d: must be between 1 and %d", c.Settings.MaxPorts, dataplane.MaxPortsLimit))
	}
	if c.Settings.Window < time.Millisecond || c.Settings.Window > 24*time.Hour {
		errs = append(errs, fmt.Errorf("--window %s: must be between 1ms and 24h", c.Settings.Window))
	}
	if c.Settings.BlockDuration < 0 {
		errs = append(errs, fmt.Errorf("--block-duration %s: must not be negative (0 blocks for good)", c.Settings.BlockDuration))
	}
	if c.Settings.ScanBlocksPerMinute < 0 || c.Settings.ScanBlocksPerMinute > 1_000_000 {
		errs = append(errs, fmt.Errorf("--scan-blocks-per-minute %d: must be between 0 (no limit) and 1000000", c.Settings.ScanBlocksPerMinute))
	}
	if c.Settings.ScanPrefixV6 < dataplane.MinIPv6ScanPrefix || c.Settings.ScanPrefixV6 > 128 {
		errs = append(errs, fmt.Errorf("--scan-prefix-v6 %d: must be between %d and 128 (per address)", c.Settings.ScanPrefixV6, dataplane.MinIPv6ScanPrefix))
	}
	if c.Start.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: must not be negative (0 runs until stopped)", c.Start.Timeout))
	}
	if c.Start.PinPath == "" {
		errs = append(errs, errors.New("--pin-path: must name a folder on a bpffs"))
	}
	for _, v := range []struct {
		flag string
		n    int
	}{{"--max-blocks", c.Start.MaxBlocks}, {"--max-block-prefixes", c.Start.MaxBlockPrefixes}} {
		if v.n < dataplane.MinCapacity || v.n > dataplane.MaxCapacity {
			errs = append(errs, fmt.Errorf("%s %d: must be between %d and %d", v.flag, v.n, dataplane.MinCapacity, dataplane.MaxCapacity))
		}
	}
	if c.Start.StateDir == "" {
		errs = append(errs, errors.New("--state-dir: must name a folder"))
	}
	if c.Settings.Escalation.Forget < 0 {
		errs = append(errs, fmt.Errorf("--escalation-forget %s: must not be negative", c.Settings.Escalation.Forget))
	}
	if c.Settings.FeedRefresh < time.Second {
		errs = append(errs, fmt.Errorf("--feed-refresh %s: must be at least 1s", c.Settings.FeedRefresh))
	}
	for _, u := range c.Settings.BlocklistURLs {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			errs = append(errs, fmt.Errorf("--blocklist-url %q: must be an http:// or https:// URL", u))
		}
	}
	if c.Start.Socket == "" {
		errs = append(errs, errors.New("--socket: must name a path"))
	}
	if c.Settings.Rules.MinBitsV4 < 1 || c.Settings.Rules.MinBitsV4 > 32 {
		errs = append(errs, fmt.Errorf("--min-prefix-v4 %d: must be between 1 and 32", c.Settings.Rules.MinBitsV4))
	}
	if c.Settings.Rules.MinBitsV6 < 1 || c.Settings.Rules.MinBitsV6 > 128 {
		errs = append(errs, fmt.Errorf("--min-prefix-v6 %d: must be between 1 and 128", c.Settings.Rules.MinBitsV6))
	}
	errs = append(errs, c.Start.Fleet.validate(), c.Start.CrowdSec.validate())
	return errors.Join(errs...)
}

// validate names what cannot work in a fleet's settings.
func (f Fleet) validate() error {
	if !f.Enabled() {
		return nil
	}
	var errs []error
	for _, u := range f.Etcd {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			errs = append(errs, fmt.Errorf("--fleet-etcd %q: must be an http:// or https:// URL", u))
		}
	}
	if _, err := fleet.NewLayout(f.Prefix); err != nil {
		errs = append(errs, fmt.Errorf("--fleet-prefix %w", err))
	}
	if err := fleet.CheckNodeName(f.Node); err != nil {
		errs = append(errs, fmt.Errorf("--node-name %w", err))
	}
	pair := func(cert, key, certFlag, keyFlag string) {
		if (cert == "") != (key == "") {
			errs = append(errs, fmt.Errorf("%s and %s go together: name both or neither", certFlag, keyFlag))
		}
	}
	pair(f.Cert, f.Key, "--fleet-cert", "--fleet-key")
	pair(f.AdminCert, f.AdminKey, "--fleet-admin-cert", "--fleet-admin-key")
	if (f.User == "") != (f.PasswordFile == "") {
		errs = append(errs, errors.New("--fleet-user and --fleet-password-file go together: name both or neither"))
	}
	if (f.AdminUser == "") != (f.AdminPasswordFile == "") {
		errs = append(errs, errors.New("--fleet-admin-user and --fleet-admin-password-file go together: name both or neither"))
	}
	if f.MinReporters < 1 {
		errs = append(errs, fmt.Errorf("--fleet-min-reporters %d: must be at least 1", f.MinReporters))
	}
	if f.AcceptPerMinute < 0 || f.Quota < 0 {
		errs = append(errs, fmt.Errorf("--fleet-accept-per-minute %d, --fleet-quota %d: must not be negative (0: no limit)",
			f.AcceptPerMinute, f.Quota))
	}
	return errors.Join(errs...)
}

// capacity is what the block maps are sized to.
func (s Start) capacity() dataplane.Capacity {
	return dataplane.Capacity{Blocks: s.MaxBlocks, BlockPrefixes: s.MaxBlockPrefixes}
}
