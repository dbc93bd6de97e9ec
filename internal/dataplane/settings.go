package dataplane

import (
	"fmt"
	"math"
	"time"

	"github.com/hbf-firewall/hbf/internal/limit"
	"github.com/hbf-firewall/hbf/internal/ports"
)

// MaxPortsLimit is the largest threshold the program's tracker can hold: it
// keeps one port more than the threshold (HBF_SCAN_SLOTS).
const MaxPortsLimit = len(hbfScanEvent{}.Ports) - 1

// MinIPv6ScanPrefix is the widest prefix a scan may block: an ISP's customer
// gets a /48 to /64; wider would take in other customers.
const MinIPv6ScanPrefix = 48

// Settings are the program's runtime knobs; SetSettings changes them without
// reloading.
type Settings struct {
	// MaxPorts: a source that tries more distinct ports than this within
	// Window is a scanner.
	MaxPorts int
	Window   time.Duration
	// BlockDuration of the block the program inserts for a scanner; 0 means
	// the block never expires.
	BlockDuration time.Duration
	// Monitor: scans are reported as "would block"; the program blocks and
	// drops nothing for them. Blocks already made stay in force.
	Monitor bool
	// IgnorePorts never count toward a scan, nor are a reason to block.
	IgnorePorts ports.List
	// UDPScans: whether UDP datagrams to closed ports count, and what a
	// scan they take past the threshold gets.
	UDPScans UDPScans
	// CountClosed: a SYN counts only on a closed port of the host (no
	// socket, not served by SetServed, not ignored). Otherwise every SYN
	// counts, but to an ignored port.
	CountClosed bool
	// Ephemeral is the host's ephemeral port range (ip_local_port_range):
	// a datagram from a port below 1024 into it is a late answer to the
	// host's own query, never an attempt. Zero: none.
	Ephemeral [2]uint16
	// MaxBlocksPerMinute bounds the scan blocks the program makes in a
	// minute, so spoofed scans (nmap -D RND:100) cannot buy a block each.
	// Past it a scanner is reported and its attempts dropped for the rest of
	// its window, unblocked. 0: no limit.
	MaxBlocksPerMinute int
	// IPv6ScanPrefix: off-link IPv6 sources are counted and blocked per
	// prefix of this length (one host owns a /64 and can rotate addresses
	// in it); on-link ones (SetOnLink) per address. 128: per address.
	IPv6ScanPrefix int
	// Limits are the connection limits, one a port (SetLimits).
	Limits []limit.Limit
}

// UDPScans is what UDP datagrams to closed ports count for.
type UDPScans string

const (
	UDPBlock  UDPScans = "block"  // they count, and a UDP scan is blocked as a TCP one
	UDPReport UDPScans = "report" // they count; a scan they complete is reported, never blocked
	UDPOff    UDPScans = "off"    // they never count
)

// Validate reports the first setting the program cannot honour.
func (s Settings) Validate() error {
	if s.MaxPorts < 1 || s.MaxPorts > MaxPortsLimit {
		return fmt.Errorf("max ports %d: must be between 1 and %d", s.MaxPorts, MaxPortsLimit)
	}
	if s.Window < time.Millisecond || s.Window > 24*time.Hour {
		return fmt.Errorf("window %s: must be between 1ms and 24h", s.Window)
	}
	if s.BlockDuration < 0 {
		return fmt.Errorf("block duration %s: must not be negative (0 means no expiry)", s.BlockDuration)
	}
	if s.MaxBlocksPerMinute < 0 || s.MaxBlocksPerMinute > math.MaxUint32 {
		return fmt.Errorf("scan blocks per minute %d: must be between 0 (no limit) and %d", s.MaxBlocksPerMinute, uint32(math.MaxUint32))
	}
	switch s.UDPScans {
	case "", UDPBlock, UDPReport, UDPOff:
	default:
		return fmt.Errorf("UDP scans %q: must be block, report or off", s.UDPScans)
	}
	if s.Ephemeral[0] > s.Ephemeral[1] {
		return fmt.Errorf("ephemeral ports %d-%d: the first must not be above the last", s.Ephemeral[0], s.Ephemeral[1])
	}
	if err := s.validateLimits(); err != nil {
		return err
	}
	if s.IPv6ScanPrefix < MinIPv6ScanPrefix || s.IPv6ScanPrefix > 128 {
		return fmt.Errorf("IPv6 scan prefix /%d: must be between /%d and /128 (per address)", s.IPv6ScanPrefix, MinIPv6ScanPrefix)
	}
	return nil
}

func (s Settings) validateLimits() error {
	if len(s.Limits) > MaxLimits {
		return fmt.Errorf("%d connection limits: at most %d", len(s.Limits), MaxLimits)
	}
	for _, l := range s.Limits {
		if l.Count < 1 || l.Count > MaxLimitCount {
			return fmt.Errorf("connection limit %s: the count must be 1 to %d", l, MaxLimitCount)
		}
	}
	return nil
}

// SetSettings changes the program's knobs; packets see the new values at once.
func (d *Dataplane) SetSettings(s Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	cfg := hbfConfig{
		MaxPorts: uint32(s.MaxPorts),
		WindowMs: uint32(s.Window.Milliseconds()),
		BlockNs:  uint64(s.BlockDuration.Nanoseconds()),

		MaxBlocksPerMin: uint32(s.MaxBlocksPerMinute),
		HashKey:         d.hashKey,
		V6PrefixLen:     uint8(s.IPv6ScanPrefix),
		EphemeralLo:     s.Ephemeral[0],
		EphemeralHi:     s.Ephemeral[1],
		NetnsInum:       d.netns,
	}
	if s.Monitor {
		cfg.Flags |= uint32(hbfConfigFlagsCONFIG_MONITOR)
	}
	switch s.UDPScans {
	case UDPOff:
		cfg.Flags |= uint32(hbfConfigFlagsCONFIG_UDP_OFF)
	case UDPReport:
		cfg.Flags |= uint32(hbfConfigFlagsCONFIG_UDP_REPORT)
	}
	if s.CountClosed {
		cfg.Flags |= uint32(hbfConfigFlagsCONFIG_COUNT_CLOSED)
	}
	// The ports first: a new threshold must not meet the old exemptions.
	if err := d.objs.HbfIgnoredTcp.Set(s.IgnorePorts.Bits(ports.TCP)); err != nil {
		return fmt.Errorf("write ignored TCP ports: %w", err)
	}
	if err := d.objs.HbfIgnoredUdp.Set(s.IgnorePorts.Bits(ports.UDP)); err != nil {
		return fmt.Errorf("write ignored UDP ports: %w", err)
	}
	if err := d.objs.HbfConfig.Set(cfg); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return d.SetLimits(s.Limits)
}
