// Package api is hbf's local control API: HTTP/JSON on a unix socket that
// only root can open. The daemon serves it; the CLI is its client.
package api

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/ports"
)

// ErrNoFleet: the daemon is in no fleet. The daemon says how to join one.
var ErrNoFleet = errors.New("this hbf is in no fleet")

// DefaultSocket is where the daemon listens and the CLI looks.
const DefaultSocket = "/run/hbf/hbf.sock"

// ChangeRequest asks to block, unblock, allow or disallow targets.
type ChangeRequest struct {
	Targets []string `json:"targets"`
	// For: how long; 0 never expires. Block and allow only.
	For    time.Duration `json:"for,omitempty"`
	Reason string        `json:"reason,omitempty"`
	// All: unblock every manual and scan block (lists keep theirs).
	All bool `json:"all,omitempty"`
	// Fleet: for the whole fleet. A block is published to the others; an
	// allow, a disallow and an unblock are fleet-wide decisions, which need
	// the fleet's admin credential.
	Fleet bool `json:"fleet,omitempty"`
	// Origin: whose blocks these are, for block and unblock: manual
	// (none), or fail2ban:<jail>. An unblock with an origin ends only
	// that origin's blocks.
	Origin string `json:"origin,omitempty"`
}

// Result is the answer for one target.
type Result struct {
	Target string       `json:"target"`
	Prefix netip.Prefix `json:"prefix,omitzero"`
	OK     bool         `json:"ok"`
	Error  string       `json:"error,omitempty"`
}

// PortSeen is one port of a scan's evidence.
type PortSeen struct {
	Port  uint16      `json:"port"`
	Proto ports.Proto `json:"proto,omitempty"` // absent: TCP
	Seen  time.Time   `json:"seen"`
}

// String is the port as event lines write it: "80", "53/udp".
func (p PortSeen) String() string { return ports.Port{Num: p.Port, Proto: p.Proto}.String() }

// Block is one block as `hbf list` shows it.
type Block struct {
	Prefix  netip.Prefix `json:"prefix"`
	Origin  string       `json:"origin"` // manual, scan, limit, file, kernel, fleet:<node>, fail2ban:<jail>
	Reason  string       `json:"reason,omitempty"`
	Source  string       `json:"source,omitempty"` // the list file, for origin file
	By      string       `json:"by,omitempty"`
	Created time.Time    `json:"created,omitzero"`
	Expires time.Time    `json:"expires,omitzero"` // absent: never
	Ports   []PortSeen   `json:"ports,omitempty"`
	Packets uint64       `json:"packets_dropped"`
}

// Allow is one allowlist entry.
type Allow struct {
	Prefix netip.Prefix `json:"prefix"`
	// Origin is why it is never blocked: manual, fleet (the fleet's
	// allowlist), loopback, host, gateway, resolver, etcd, ssh, flag, ntp,
	// metadata, member.
	Origin  string    `json:"origin"`
	Reason  string    `json:"reason,omitempty"`
	By      string    `json:"by,omitempty"`
	Created time.Time `json:"created,omitzero"`
	Expires time.Time `json:"expires,omitzero"`
	// Unenforced: the kernel's allowlist has no room for it, so a forged
	// scan could block it; no decision does.
	Unenforced bool `json:"unenforced,omitempty"`
}

// Why explains what hbf does with one address.
type Why struct {
	Addr    netip.Addr `json:"addr"`
	Verdict string     `json:"verdict"` // blocked, allowed, allowed-despite-block, not-blocked
	Blocks  []Block    `json:"blocks,omitempty"`
	Allows  []Allow    `json:"allows,omitempty"`
}

// Interface is an interface hbf protects.
type Interface struct {
	Name string `json:"name"`
	Hook string `json:"hook"` // xdp or tcx
	Mode string `json:"xdp_mode"`
	// What runs on its ingress, hbf's program included, in order: the XDP
	// hook's program, then the TCX programs at TC ingress.
	XDP *Program  `json:"xdp,omitempty"`
	TCX []Program `json:"tcx,omitempty"`
}

// AttachedAs says how hbf runs on the interface: "native XDP", "TCX".
func (i Interface) AttachedAs() string {
	if i.Hook == "tcx" {
		if i.Mode == "adopted" {
			return "TCX, adopted"
		}
		return "TCX"
	}
	return i.Mode + " XDP"
}

// Chain lists what runs on the interface's ingress, in order, hbf's
// program marked: "XDP xdp_filter (12) -> TCX hbf_tc (40)* -> TCX counter (41)".
func (i Interface) Chain() string {
	name := func(hook string, p Program) string {
		n := p.Name
		if n == "" {
			n = "-"
		}
		s := fmt.Sprintf("%s %s (%d)", hook, n, p.ID)
		if p.HBF {
			s += "*"
		}
		return s
	}
	var parts []string
	if i.XDP != nil {
		parts = append(parts, name("XDP", *i.XDP))
	}
	for _, p := range i.TCX {
		parts = append(parts, name("TCX", p))
	}
	return strings.Join(parts, " -> ")
}

// Program is a BPF program attached to an interface.
type Program struct {
	ID   uint32 `json:"id"`
	Name string `json:"name"`
	HBF  bool   `json:"hbf,omitempty"` // this daemon's
}

// Status is the daemon's state.
type Status struct {
	Version    string            `json:"version"`
	PID        int               `json:"pid"`
	Started    time.Time         `json:"started"`
	Uptime     string            `json:"uptime"`
	Interfaces []Interface       `json:"interfaces"`
	Settings   map[string]string `json:"settings"`
	Counters   map[string]uint64 `json:"counters"`
	Entries    map[string]int    `json:"entries"`
	Store      string            `json:"store"` // "ok" or what recovery found
	Lists      []ListStatus      `json:"lists,omitempty"`
	Limits     []LimitStatus     `json:"limits,omitempty"`
	CrowdSec   *CrowdSecStatus   `json:"crowdsec,omitempty"`
}

// Sources a Top answer holds: by default, and at most.
const (
	DefaultTopSources = 100
	MaxTopSources     = 1000
)

// Top is the busiest sources the kernel drops packets of.
type Top struct {
	Time    time.Time   `json:"time"`
	Sources []TopSource `json:"sources"` // busiest first
	// Followed is how many blocks the daemon follows: those the kernel
	// noted as they dropped, since a view asked.
	Followed int `json:"followed"`
}

// TopSource is a block dropping packets, as hbf top shows it.
type TopSource struct {
	Prefix netip.Prefix `json:"prefix"`
	// Origins of the decisions that block it: scan, limit, manual, file,
	// fleet:<node>, crowdsec:<origin>, fail2ban:<jail> …
	Origins []string  `json:"origins"`
	Reason  string    `json:"reason,omitempty"`
	Expires time.Time `json:"expires,omitzero"` // absent: never
	Packets uint64    `json:"packets_dropped"`  // since the block was made
	Rate    float64   `json:"rate"`             // packets/s, over the daemon's last two looks
}

// CrowdSecStatus is this host's link to a CrowdSec Local API.
type CrowdSecStatus struct {
	LAPI          string            `json:"lapi"`
	Connected     bool              `json:"connected"`
	Why           string            `json:"why,omitempty"`      // the last failure, while not connected
	LastPull      time.Time         `json:"last_pull,omitzero"` // the last read applied
	LastPullTook  string            `json:"last_pull_took"`     // from its request to its blocks in the kernel
	LastApplyTook string            `json:"last_apply_took"`    // of which from LAPI's answer read
	LastSnapshot  time.Time         `json:"last_snapshot,omitzero"`
	Decisions     map[string]int    `json:"decisions"`         // in force, by origin
	Skipped       map[string]uint64 `json:"skipped,omitempty"` // by reason: type, scope, value, duration, own
	Refused       map[string]uint64 `json:"refused,omitempty"` // by reason: policy, cap
	Failures      uint64            `json:"failures"`          // reads that failed
	// The alerts of hbf's blocks, with --crowdsec-machine-id.
	AlertsPushed  uint64 `json:"alerts_pushed"`
	AlertsQueued  int    `json:"alerts_queued"`
	AlertsDropped uint64 `json:"alerts_dropped"` // the oldest, past the queue's bound
	PushError     string `json:"push_error,omitempty"`
}

// LimitStatus is a connection limit, and what it did since the maps that
// keep it were made (they outlive restarts).
type LimitStatus struct {
	Limit    string `json:"limit"` // as --limit takes it: 22/tcp=6/30s
	Port     uint16 `json:"port"`
	Proto    string `json:"proto"`
	Count    int    `json:"count"`
	Window   string `json:"window"`
	Action   string `json:"action"`   // block, escalate or drop
	Counted  uint64 `json:"counted"`  // connections (UDP: datagrams)
	Exceeded uint64 `json:"exceeded"` // connections over the limit
	Blocked  uint64 `json:"blocked"`  // sources blocked
	Dropped  uint64 `json:"dropped"`  // SYNs and datagrams dropped (:drop)
}

// ListStatus is a list hbf loads blocks from.
type ListStatus struct {
	Source  string    `json:"source"`
	Entries int       `json:"entries"`
	Loaded  time.Time `json:"loaded"`
	Status  string    `json:"status"` // "ok", or "degraded: why"
}

// FleetStatus is this host's view of its fleet.
type FleetStatus struct {
	Node      string         `json:"node"`
	Prefix    string         `json:"prefix"`
	Endpoints []string       `json:"endpoints"`
	Connected bool           `json:"connected"`
	Why       string         `json:"why,omitempty"` // the last failure, while not connected
	Since     time.Time      `json:"since,omitzero"`
	Revision  int64          `json:"revision"` // of etcd, applied here
	Admin     bool           `json:"admin"`    // this node may issue fleet-wide decisions
	Members   []FleetMember  `json:"members"`
	Entries   map[string]int `json:"entries"` // the fleet's blocks applied here, by origin node
	Published int            `json:"published"`
	Pending   int            `json:"pending"` // scan blocks waiting for more reporters
}

// FleetMember is a node of the fleet.
type FleetMember struct {
	Node  string       `json:"node"`
	HBF   string       `json:"hbf"`
	Addrs []netip.Addr `json:"addrs"`
	Clock time.Time    `json:"clock"`
	// Skew is its clock against this host's, from its last membership
	// write; expiries assume they agree within seconds.
	Skew string `json:"skew"`
}

// ModeRequest switches the daemon to "enforce" or "monitor".
type ModeRequest struct {
	Mode string `json:"mode"`
}
