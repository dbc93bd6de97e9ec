package dataplane

import (
	"fmt"
	"slices"
)

// DropReason is why the program dropped a packet.
type DropReason int

// The reasons, in the order status and metrics list them.
const (
	DropBlocked      DropReason = iota // the source is blocked
	DropStealth                        // a TCP probe no connection starts with (NULL, FIN, XMAS, SYN+FIN, SYN+RST)
	DropScan                           // an attempt of a source past the scan threshold
	DropTrackerBusy                    // its tracker entry stayed locked: dropped rather than let through uncounted
	DropMalformed                      // a header is truncated or inconsistent
	DropVLANDepth                      // more VLAN tags than the parser skips
	DropExtDepth                       // a longer IPv6 extension-header chain than the parser walks
	DropTinyFragment                   // TCP or UDP header not whole in the first fragment, or a fragment overlapping TCP's
	DropLimit                          // a SYN or datagram of a source over a connection limit that throttles (:drop)
	numDropReasons
)

var dropLabels = [numDropReasons]string{
	DropBlocked:      "blocked",
	DropStealth:      "stealth",
	DropScan:         "scan",
	DropTrackerBusy:  "tracker_busy",
	DropMalformed:    "malformed",
	DropVLANDepth:    "vlan_depth",
	DropExtDepth:     "ipv6_ext_depth",
	DropTinyFragment: "tiny_fragment",
	DropLimit:        "limit",
}

// String is the reason's metric label.
func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return fmt.Sprintf("DropReason(%d)", int(r))
	}
	return dropLabels[r]
}

// Counters are the program's per-CPU counters, summed over CPUs.
type Counters struct {
	Packets            uint64 // every packet the program saw: Passed + DroppedTotal
	Passed             uint64
	Dropped            [numDropReasons]uint64 // by DropReason
	NewConnections     uint64
	ScansDetected      uint64
	ScansAllowlisted   uint64 // scans from allowlisted sources: reported, not blocked
	AllowlistOverrides uint64 // packets of blocked sources passed because allowlisted
	BlocksAdded        uint64 // blocks the program inserted for scanners
	BlockFailures      uint64 // scanner blocks refused by a full map
	EventsLost         uint64 // events dropped because the ring buffer was full
	TrackerFull        uint64 // attempts from sources the full tracker could not hold
	ScansMonitored     uint64 // scans let through in monitor mode
	BlocksRateLimited  uint64 // scanners not blocked: the minute's budget of blocks was spent
	TrackerEvictions   uint64 // first attempts of live sources overwritten by other sources'
	UDPAttempts        uint64 // UDP datagrams counted: to a closed port of the host
	UDPScansDetected   uint64 // scans a UDP datagram took past the threshold
	SYNsUncounted      uint64 // SYNs not counted: to an ignored port, or an open one with CountClosed
	LimitsExceeded     uint64 // connections (datagrams) over a connection limit
	LimitBlocks        uint64 // blocks the connection tracer inserted
	LimitUnlogged      uint64 // connections not counted: the log map could not take the source
}

// DroppedTotal is the number of packets dropped for any reason.
func (c Counters) DroppedTotal() uint64 {
	var n uint64
	for _, v := range c.Dropped {
		n += v
	}
	return n
}

// Counter is one of the program's counters, with what every place that
// shows it needs: Counters reads it, hbf status and /metrics name it.
type Counter struct {
	Status string // its key in hbf status; "": not shown there
	Metric string // its Prometheus family
	Reason string // the family's reason label (the drop counters), or ""
	Help   string // the family's help
	// Lost marks the events lost in the kernel: the daemon adds its own
	// losses to the metric.
	Lost bool
	// sum marks the count of every packet: the program keeps none, each
	// packet ends in passed or one drop's reason, and Counters adds them.
	sum   bool
	index hbfCounter
	field func(*Counters) *uint64
}

// Value is the counter's value in k.
func (c Counter) Value(k *Counters) uint64 { return *c.field(k) }

const dropHelp = "Packets the XDP program dropped, by reason."

func dropCounter(r DropReason, index hbfCounter) Counter {
	return Counter{Status: "dropped_" + r.String(), Metric: "hbf_packets_dropped_total", Reason: r.String(),
		Help: dropHelp, index: index, field: func(k *Counters) *uint64 { return &k.Dropped[r] }}
}

// counterTable declares each counter once, in the order /metrics lists
// them; TestCounterTable checks it holds every counter of the program.
var counterTable = []Counter{
	{Status: "new_connections", Metric: "hbf_new_connections_total",
		Help:  "New inbound TCP connections (SYNs that passed), retransmissions counted once.",
		index: hbfCounterCOUNTER_NEW_CONNECTIONS, field: func(k *Counters) *uint64 { return &k.NewConnections }},
	{Status: "packets", Metric: "hbf_packets_total", Help: "Packets the XDP program saw.",
		index: hbfCounterCOUNTER_PACKETS, field: func(k *Counters) *uint64 { return &k.Packets }, sum: true},
	{Status: "packets_passed", Metric: "hbf_packets_passed_total",
		Help:  "Packets the XDP program passed; with the drops, every packet it saw.",
		index: hbfCounterCOUNTER_PASSED, field: func(k *Counters) *uint64 { return &k.Passed }},
	dropCounter(DropBlocked, hbfCounterCOUNTER_DROP_BLOCKED),
	dropCounter(DropStealth, hbfCounterCOUNTER_DROP_STEALTH),
	dropCounter(DropScan, hbfCounterCOUNTER_DROP_SCAN),
	dropCounter(DropTrackerBusy, hbfCounterCOUNTER_DROP_TRACKER_BUSY),
	dropCounter(DropMalformed, hbfCounterCOUNTER_DROP_MALFORMED),
	dropCounter(DropVLANDepth, hbfCounterCOUNTER_DROP_VLAN_DEPTH),
	dropCounter(DropExtDepth, hbfCounterCOUNTER_DROP_EXT_DEPTH),
	dropCounter(DropTinyFragment, hbfCounterCOUNTER_DROP_TINY_FRAGMENT),
	dropCounter(DropLimit, hbfCounterCOUNTER_DROP_LIMIT),
	{Status: "scans_detected", Metric: "hbf_port_scans_detected_total",
		Help:  "Port scans detected, allowlisted sources included.",
		index: hbfCounterCOUNTER_SCANS_DETECTED, field: func(k *Counters) *uint64 { return &k.ScansDetected }},
	{Metric: "hbf_port_scans_allowlisted_total", Help: "Port scans from allowlisted sources: reported, not blocked.",
		index: hbfCounterCOUNTER_SCANS_ALLOWLISTED, field: func(k *Counters) *uint64 { return &k.ScansAllowlisted }},
	{Status: "udp_scans_detected", Metric: "hbf_udp_port_scans_detected_total",
		Help:  "Port scans a UDP datagram took past the threshold (of hbf_port_scans_detected_total).",
		index: hbfCounterCOUNTER_UDP_SCANS_DETECTED, field: func(k *Counters) *uint64 { return &k.UDPScansDetected }},
	{Status: "udp_attempts", Metric: "hbf_udp_attempts_total",
		Help:  "UDP datagrams counted toward a scan: to a closed port of the host.",
		index: hbfCounterCOUNTER_UDP_ATTEMPTS, field: func(k *Counters) *uint64 { return &k.UDPAttempts }},
	{Status: "syns_uncounted", Metric: "hbf_syns_uncounted_total",
		Help:  "SYNs not counted toward a scan: to an ignored port, or, where only closed ports count, to one the host serves.",
		index: hbfCounterCOUNTER_SYNS_UNCOUNTED, field: func(k *Counters) *uint64 { return &k.SYNsUncounted }},
	{Status: "scans_monitored", Metric: "hbf_port_scans_monitored_total",
		Help:  "Port scans in monitor mode: reported as would-block, not blocked.",
		index: hbfCounterCOUNTER_SCANS_MONITORED, field: func(k *Counters) *uint64 { return &k.ScansMonitored }},
	{Status: "scan_blocks", Metric: "hbf_scan_blocks_total", Help: "Blocks the XDP program inserted for scanners.",
		index: hbfCounterCOUNTER_BLOCKS_ADDED, field: func(k *Counters) *uint64 { return &k.BlocksAdded }},
	{Status: "scan_block_failures", Metric: "hbf_scan_block_failures_total", Help: "Blocks of scanners and of sources over a connection limit the full block map refused.",
		index: hbfCounterCOUNTER_BLOCK_FAILURES, field: func(k *Counters) *uint64 { return &k.BlockFailures }},
	{Status: "scan_blocks_rate_limited", Metric: "hbf_scan_blocks_rate_limited_total",
		Help:  "Scanners and sources over a connection limit not blocked because the minute's budget of kernel blocks was spent (a scanner's attempts are still dropped for the window).",
		index: hbfCounterCOUNTER_BLOCKS_RATE_LIMITED, field: func(k *Counters) *uint64 { return &k.BlocksRateLimited }},
	{Status: "limits_exceeded", Metric: "hbf_connection_limits_exceeded_total",
		Help:  "Connections (UDP: datagrams) over a connection limit, of every limit; hbf_limit_exceeded_total gives each limit's.",
		index: hbfCounterCOUNTER_LIMITS_EXCEEDED, field: func(k *Counters) *uint64 { return &k.LimitsExceeded }},
	{Status: "limit_blocks", Metric: "hbf_connection_limit_blocks_total", Help: "Blocks the kernel made for sources over a connection limit.",
		index: hbfCounterCOUNTER_LIMIT_BLOCKS, field: func(k *Counters) *uint64 { return &k.LimitBlocks }},
	{Status: "limit_unlogged", Metric: "hbf_connection_limit_unlogged_total",
		Help:  "Connections to a port with a limit not counted: the kernel's log of sources could not take theirs.",
		index: hbfCounterCOUNTER_LIMIT_UNLOGGED, field: func(k *Counters) *uint64 { return &k.LimitUnlogged }},
	{Status: "events_lost", Metric: "hbf_events_lost_total", Lost: true,
		Help:  "Events lost: ring buffer full in the kernel; undecodable, or dropped because the output (stdout, log file) did not keep up, in the daemon.",
		index: hbfCounterCOUNTER_EVENTS_LOST, field: func(k *Counters) *uint64 { return &k.EventsLost }},
	{Metric: "hbf_allowlist_overrides_total", Help: "Packets of blocked sources passed because the source is allowlisted.",
		index: hbfCounterCOUNTER_ALLOWLIST_OVERRIDES, field: func(k *Counters) *uint64 { return &k.AllowlistOverrides }},
	{Status: "tracker_evictions", Metric: "hbf_scan_tracker_evictions_total",
		Help:  "First attempts of live sources overwritten by another source's in the tracker's first tier.",
		index: hbfCounterCOUNTER_TRACKER_EVICTIONS, field: func(k *Counters) *uint64 { return &k.TrackerEvictions }},
	{Status: "tracker_full", Metric: "hbf_scan_tracker_full_total",
		Help:  "Attempts from new sources the full scan tracker could not hold.",
		index: hbfCounterCOUNTER_TRACKER_FULL, field: func(k *Counters) *uint64 { return &k.TrackerFull }},
}

// CounterTable lists every counter of the program.
func CounterTable() []Counter { return slices.Clone(counterTable) }

// Counters reads and sums the per-CPU counters.
func (d *Dataplane) Counters() (Counters, error) {
	var k Counters
	var perCPU []uint64
	for _, c := range counterTable {
		if c.sum {
			continue
		}
		if err := d.objs.Counters.Lookup(uint32(c.index), &perCPU); err != nil {
			return k, fmt.Errorf("read counter %d: %w", c.index, err)
		}
		f := c.field(&k)
		for _, v := range perCPU {
			*f += v
		}
	}
	k.Packets = k.Passed + k.DroppedTotal()
	return k, nil
}
