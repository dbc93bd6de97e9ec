package dataplane

import "fmt"

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
	DropTinyFragment                   // TCP header not whole in the first fragment, or a fragment overlapping it
	numDropReasons
)

var dropReasons = [numDropReasons]struct {
	label   string
	counter hbfCounter
}{
	DropBlocked:      {"blocked", hbfCounterCOUNTER_DROP_BLOCKED},
	DropStealth:      {"stealth", hbfCounterCOUNTER_DROP_STEALTH},
	DropScan:         {"scan", hbfCounterCOUNTER_DROP_SCAN},
	DropTrackerBusy:  {"tracker_busy", hbfCounterCOUNTER_DROP_TRACKER_BUSY},
	DropMalformed:    {"malformed", hbfCounterCOUNTER_DROP_MALFORMED},
	DropVLANDepth:    {"vlan_depth", hbfCounterCOUNTER_DROP_VLAN_DEPTH},
	DropExtDepth:     {"ipv6_ext_depth", hbfCounterCOUNTER_DROP_EXT_DEPTH},
	DropTinyFragment: {"tiny_fragment", hbfCounterCOUNTER_DROP_TINY_FRAGMENT},
}

// DropReasons lists every reason.
func DropReasons() []DropReason {
	out := make([]DropReason, numDropReasons)
	for i := range out {
		out[i] = DropReason(i)
	}
	return out
}

// String is the reason's metric label.
func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return fmt.Sprintf("DropReason(%d)", int(r))
	}
	return dropReasons[r].label
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
}

// DroppedTotal is the number of packets dropped for any reason.
func (c Counters) DroppedTotal() uint64 {
	var n uint64
	for _, v := range c.Dropped {
		n += v
	}
	return n
}

// Counters reads and sums the per-CPU counters.
func (d *Dataplane) Counters() (Counters, error) {
	var c Counters
	fields := map[hbfCounter]*uint64{
		hbfCounterCOUNTER_PACKETS:             &c.Packets,
		hbfCounterCOUNTER_NEW_CONNECTIONS:     &c.NewConnections,
		hbfCounterCOUNTER_SCANS_DETECTED:      &c.ScansDetected,
		hbfCounterCOUNTER_SCANS_ALLOWLISTED:   &c.ScansAllowlisted,
		hbfCounterCOUNTER_ALLOWLIST_OVERRIDES: &c.AllowlistOverrides,
		hbfCounterCOUNTER_BLOCKS_ADDED:        &c.BlocksAdded,
		hbfCounterCOUNTER_BLOCK_FAILURES:      &c.BlockFailures,
		hbfCounterCOUNTER_EVENTS_LOST:         &c.EventsLost,
		hbfCounterCOUNTER_TRACKER_FULL:        &c.TrackerFull,
		hbfCounterCOUNTER_SCANS_MONITORED:     &c.ScansMonitored,
		hbfCounterCOUNTER_PASSED:              &c.Passed,
		hbfCounterCOUNTER_BLOCKS_RATE_LIMITED: &c.BlocksRateLimited,
		hbfCounterCOUNTER_TRACKER_EVICTIONS:   &c.TrackerEvictions,
	}
	for r, dr := range dropReasons {
		fields[dr.counter] = &c.Dropped[r]
	}
	if len(fields) != int(hbfCounterCOUNTER_MAX) {
		return c, fmt.Errorf("counters: program has %d, this build reads %d", hbfCounterCOUNTER_MAX, len(fields))
	}
	var perCPU []uint64
	for i, f := range fields {
		if err := d.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return c, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range perCPU {
			*f += v
		}
	}
	return c, nil
}
