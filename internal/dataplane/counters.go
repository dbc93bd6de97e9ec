package dataplane

import "fmt"

// Counters are the program's per-CPU counters, summed over CPUs.
type Counters struct {
	Packets            uint64 // every packet the program saw
	DroppedBlocked     uint64
	DroppedStealth     uint64
	DroppedScan        uint64
	DroppedMalformed   uint64
	NewConnections     uint64
	ScansDetected      uint64
	ScansAllowlisted   uint64 // scans from allowlisted sources: reported, not blocked
	AllowlistOverrides uint64 // packets of blocked sources passed because allowlisted
	BlocksAdded        uint64 // blocks the program inserted for scanners
	BlockFailures      uint64 // scanner blocks refused by a full map
	EventsLost         uint64 // events dropped because the ring buffer was full
	TrackerFull        uint64 // attempts from sources the full tracker could not hold
	DroppedTrackerBusy uint64 // attempts dropped: their tracker entry stayed locked
	ScansMonitored     uint64 // scans let through in monitor mode
}

// Counters reads and sums the per-CPU counters.
func (d *Dataplane) Counters() (Counters, error) {
	var c Counters
	fields := []*uint64{
		hbfCounterCOUNTER_PACKETS:             &c.Packets,
		hbfCounterCOUNTER_DROP_BLOCKED:        &c.DroppedBlocked,
		hbfCounterCOUNTER_DROP_STEALTH:        &c.DroppedStealth,
		hbfCounterCOUNTER_DROP_SCAN:           &c.DroppedScan,
		hbfCounterCOUNTER_DROP_MALFORMED:      &c.DroppedMalformed,
		hbfCounterCOUNTER_NEW_CONNECTIONS:     &c.NewConnections,
		hbfCounterCOUNTER_SCANS_DETECTED:      &c.ScansDetected,
		hbfCounterCOUNTER_SCANS_ALLOWLISTED:   &c.ScansAllowlisted,
		hbfCounterCOUNTER_ALLOWLIST_OVERRIDES: &c.AllowlistOverrides,
		hbfCounterCOUNTER_BLOCKS_ADDED:        &c.BlocksAdded,
		hbfCounterCOUNTER_BLOCK_FAILURES:      &c.BlockFailures,
		hbfCounterCOUNTER_EVENTS_LOST:         &c.EventsLost,
		hbfCounterCOUNTER_TRACKER_FULL:        &c.TrackerFull,
		hbfCounterCOUNTER_DROP_TRACKER_BUSY:   &c.DroppedTrackerBusy,
		hbfCounterCOUNTER_SCANS_MONITORED:     &c.ScansMonitored,
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
