package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// floodSource is the i-th source of a spoofed flood: addresses of 10.0.0.0/8,
// which no test uses for anything else.
func floodSource(i int) string {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
}

// A flood of one-SYN sources (hping3 --rand-source) goes through the
// first-attempt table only: the tracker proper holds the real scanner alone,
// and the scanner, started before the flood and finished after it, is
// blocked. The program's full-size table, as on a host.
func TestRandomSourceFloodDoesNotHideScanner(t *testing.T) {
	d := newTestDPWith(t, defaults, Options{})
	const scanner, host = "198.51.100.9", "192.0.2.1"
	const flood = 100_000

	expectVerdict(t, d.run(tcpSYN(scanner, host, 40000, 21)), xdpPass, "scanner's first port")
	expectVerdict(t, d.run(tcpSYN(scanner, host, 40001, 22)), xdpPass, "scanner's second port")
	for i := range flood {
		if got := d.run(tcpSYN(floodSource(i), host, uint16(1024+i%60000), 80)); got != xdpPass {
			t.Fatalf("flood SYN %d from %s: verdict %d, want pass (one SYN is no scan)", i, floodSource(i), got)
		}
		if i == flood/2 {
			expectVerdict(t, d.run(tcpSYN(scanner, host, 40002, 23)), xdpPass, "scanner's third port, mid-flood")
		}
	}
	expectVerdict(t, d.run(tcpSYN(scanner, host, 40003, 25)), xdpDrop, "scanner's fourth port")

	var states int
	var k hbfAddr
	it := d.objs.ScanStates.Iterate()
	var v hbfScanState
	for it.Next(&k, &v) {
		states++
	}
	if states != 1 {
		t.Errorf("%d tracker entries after the flood, want 1: the scanner's", states)
	}
	c := d.counters()
	if c.BlocksAdded != 1 || c.TrackerFull != 0 || c.ScansDetected != 1 {
		t.Errorf("counters %+v: want the scanner blocked, nothing untracked", c)
	}
	t.Logf("%d flood sources: %d first attempts of live sources overwritten (table of %d)",
		flood, c.TrackerEvictions, d.objs.FirstAttempts.MaxEntries())
	blocks, err := d.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || blocks[0].Prefix != mustPrefix(scanner+"/32") {
		t.Errorf("blocks %+v, want only the scanner's", blocks)
	}
}

// A source's first attempt can be overwritten by another source's that
// lands in its slot, and that is counted; once a source tried two ports it
// has a tracker entry, which no flood evicts.
func TestFirstAttemptEvictionsAreCounted(t *testing.T) {
	d := newTestDP(t, defaults) // a small table: evictions are certain
	const scanner, host = "198.51.100.9", "192.0.2.1"
	expectVerdict(t, d.run(tcpSYN(scanner, host, 40000, 21)), xdpPass, "first port")
	expectVerdict(t, d.run(tcpSYN(scanner, host, 40001, 22)), xdpPass, "second port")
	for i := range 8 * testFirstAttemptSlots {
		d.run(tcpSYN(floodSource(i), host, 1024, 80))
	}
	c := d.counters()
	if c.TrackerEvictions == 0 {
		t.Errorf("no eviction counted after %d sources in %d slots", 8*testFirstAttemptSlots, testFirstAttemptSlots)
	}
	expectVerdict(t, d.run(tcpSYN(scanner, host, 40002, 23)), xdpPass, "third port")
	expectVerdict(t, d.run(tcpSYN(scanner, host, 40003, 25)), xdpDrop, "fourth port: the scan")
}

// A retransmitted first SYN is one attempt, reported once; a second port
// moves the source to the tracker with both ports counted.
func TestFirstAttemptRetransmission(t *testing.T) {
	d := newTestDP(t, defaults)
	syn := tcpSYN("198.51.100.9", "192.0.2.1", 40000, 22)
	for range 3 {
		expectVerdict(t, d.run(syn), xdpPass, "SYN and its retransmissions")
	}
	if n := len(d.drain()); n != 1 {
		t.Errorf("%d events for one attempt sent three times, want 1", n)
	}
	for port := uint16(23); port <= 24; port++ {
		expectVerdict(t, d.run(tcpSYN("198.51.100.9", "192.0.2.1", 40000, port)), xdpPass, "new port")
	}
	expectVerdict(t, d.run(tcpSYN("198.51.100.9", "192.0.2.1", 40000, 25)), xdpDrop, "the fourth distinct port")
}

// toMinuteStart moves the program's clock, if needed, to where its minute
// has at least 10 s to run, so that a test's blocks all fall in one.
func (d *testDP) toMinuteStart() {
	into := time.Duration(d.clock.mono()) % time.Minute
	if left := time.Minute - into; left < 10*time.Second {
		d.advance(left + 100*time.Millisecond)
	}
}

// Spoofed decoys (nmap -D RND:N) cannot buy a block each: past the minute's
// budget a scanner is reported, counted and not blocked, and its attempts
// are still dropped for the rest of its window.
func TestScanBlocksAreRateLimited(t *testing.T) {
	s := defaults
	s.MaxBlocksPerMinute = 2
	d := newTestDP(t, s)
	d.toMinuteStart()
	const host = "192.0.2.1"
	scanners := []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"}
	for _, src := range scanners {
		for port := uint16(1); port <= 4; port++ {
			d.run(tcpSYN(src, host, 40000, port))
		}
	}
	var limited, blocked []string
	for _, ev := range d.drain() {
		if sc, ok := ev.(*Scan); ok {
			switch {
			case sc.Blocked:
				blocked = append(blocked, sc.Src.String())
			case sc.RateLimited:
				limited = append(limited, sc.Src.String())
			}
		}
	}
	if !slices.Equal(blocked, scanners[:2]) || !slices.Equal(limited, scanners[2:]) {
		t.Errorf("blocked %v, rate-limited %v; want the first two blocked, the others reported", blocked, limited)
	}
	c := d.counters()
	if c.BlocksAdded != 2 || c.BlocksRateLimited != 2 || c.ScansDetected != 4 {
		t.Errorf("counters %+v, want 2 blocks, 2 rate-limited", c)
	}
	blocks, err := d.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 {
		t.Errorf("%d blocks, want 2", len(blocks))
	}
	// The rate-limited scanner: new ports and old ones dropped as a scan,
	// other traffic (not an attempt) passes.
	before := d.counters().Dropped[DropScan]
	expectVerdict(t, d.run(tcpSYN(scanners[3], host, 40001, 5)), xdpDrop, "a new port of a rate-limited scanner")
	expectVerdict(t, d.run(tcpSYN(scanners[3], host, 40001, 1)), xdpDrop, "an old port of a rate-limited scanner")
	if n := d.counters().Dropped[DropScan] - before; n != 2 {
		t.Errorf("%d scan drops, want 2", n)
	}
	established := tcpSYN(scanners[3], host, 40000, 1)
	established.flags = ack
	expectVerdict(t, d.run(established), xdpPass, "an ACK of a rate-limited scanner")
}

// Off-link IPv6 sources are counted and blocked per /64: a scanner rotating
// its address in its prefix is one scanner. On-link ones are counted per
// address, so one neighbour's scan never blocks the others.
func TestIPv6ScannersCountedPerPrefix(t *testing.T) {
	d := newTestDP(t, defaults)
	if err := d.SetOnLink([]netip.Prefix{mustPrefix("2001:db8::/64")}); err != nil {
		t.Fatal(err)
	}
	const host = "2001:db8::1"

	// Off-link: four addresses of one /64, a port each.
	for i, src := range []string{"2001:db8:ff::1", "2001:db8:ff::2", "2001:db8:ff:0:aaaa::3", "2001:db8:ff::4"} {
		want := uint32(xdpPass)
		if i == 3 {
			want = xdpDrop
		}
		expectVerdict(t, d.run(tcpSYN(src, host, 40000, uint16(100+i))), want, src)
	}
	expectVerdict(t, d.run(tcpSYN("2001:db8:ff::99", host, 40000, 443)), xdpDrop, "another address of the blocked /64")
	expectVerdict(t, d.run(tcpSYN("2001:db8:fe::1", host, 40000, 443)), xdpPass, "the next /64")
	blocks, err := d.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || blocks[0].Prefix != mustPrefix("2001:db8:ff::/64") || blocks[0].Origin != OriginScan {
		t.Errorf("blocks %+v, want the scan block of 2001:db8:ff::/64", blocks)
	}
	var scan *Scan
	for _, ev := range d.drain() {
		if s, ok := ev.(*Scan); ok {
			scan = s
		}
	}
	if scan == nil || scan.Source != mustPrefix("2001:db8:ff::/64") || scan.Src != netip.MustParseAddr("2001:db8:ff::4") {
		t.Errorf("scan event %+v, want source 2001:db8:ff::/64 from 2001:db8:ff::4", scan)
	}

	// On-link and link-local: per address, never aggregated.
	for _, prefix := range []string{"2001:db8::", "fe80::"} {
		for i := range 8 {
			src := fmt.Sprintf("%s%x", prefix, 0xa0+i)
			expectVerdict(t, d.run(tcpSYN(src, host, 40000, uint16(200+i))), xdpPass, "neighbour "+src)
		}
	}
	// IPv4-mapped sources are IPv4 addresses.
	for i := range 4 {
		src := netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})
		mapped := netip.AddrFrom16(src.As16()).String()
		expectVerdict(t, d.run(tcpSYN(mapped, host, 40000, uint16(300+i))), xdpPass, "mapped "+mapped)
	}
	if c := d.counters(); c.ScansDetected != 1 {
		t.Errorf("%d scans detected, want 1: neighbours and mapped sources are separate", c.ScansDetected)
	}

	// Per address when the prefix is 128.
	s := defaults
	s.IPv6ScanPrefix = 128
	if err := d.SetSettings(s); err != nil {
		t.Fatal(err)
	}
	for i, src := range []string{"2001:db8:ee::1", "2001:db8:ee::2", "2001:db8:ee::3", "2001:db8:ee::4"} {
		expectVerdict(t, d.run(tcpSYN(src, host, 40000, uint16(400+i))), xdpPass, src+" with per-address counting")
	}
}

func TestOnLinkAlwaysHoldsLinkLocal(t *testing.T) {
	d := newTestDP(t, defaults)
	for _, set := range [][]netip.Prefix{nil, {mustPrefix("2001:db8::/64"), mustPrefix("192.0.2.0/24")}, nil} {
		if err := d.SetOnLink(set); err != nil {
			t.Fatal(err)
		}
		got, err := d.OnLink()
		if err != nil {
			t.Fatal(err)
		}
		want := []netip.Prefix{LinkLocal}
		if len(set) > 0 {
			want = append(want, set[0]) // IPv4 is not aggregated, so not kept
		}
		slices.SortFunc(got, netip.Prefix.Compare)
		slices.SortFunc(want, netip.Prefix.Compare)
		if !slices.Equal(got, want) {
			t.Errorf("SetOnLink(%v): on-link %v, want %v", set, got, want)
		}
	}
}

// A scanner reported while allowlisted (or in monitor mode) is stopped at
// its next attempt once that no longer holds: it crosses again, as a
// scanner now, within the same window.
func TestScannerLosingItsExemptionIsBlocked(t *testing.T) {
	for _, exemption := range []string{"allowlist", "monitor"} {
		t.Run(exemption, func(t *testing.T) {
			s := defaults
			s.Monitor = exemption == "monitor"
			d := newTestDP(t, s)
			const src, host = "198.51.100.9", "192.0.2.1"
			if exemption == "allowlist" {
				d.mustAllow(src + "/32")
			}
			for port := uint16(1); port <= 6; port++ {
				expectVerdict(t, d.run(tcpSYN(src, host, 40000, port)), xdpPass, "an exempt scanner's SYN")
			}
			if exemption == "allowlist" {
				if _, err := d.Disallow(mustPrefix(src + "/32")); err != nil {
					t.Fatal(err)
				}
			} else if err := d.SetSettings(defaults); err != nil {
				t.Fatal(err)
			}
			expectVerdict(t, d.run(tcpSYN(src, host, 40000, 7)), xdpDrop, "its next port, exempt no more")
			var flags []string
			for _, ev := range d.drain() {
				if sc, ok := ev.(*Scan); ok {
					flags = append(flags, fmt.Sprintf("allowlisted=%v monitor=%v blocked=%v", sc.Allowlisted, sc.WouldBlock, sc.Blocked))
				}
			}
			want := []string{"allowlisted=true monitor=false blocked=false", "allowlisted=false monitor=false blocked=true"}
			if exemption == "monitor" {
				want[0] = "allowlisted=false monitor=true blocked=false"
			}
			if !slices.Equal(flags, want) {
				t.Errorf("scan events %v, want %v", flags, want)
			}
			if _, ok, _ := d.LookupBlock(mustPrefix(src + "/32")); !ok {
				t.Error("no block")
			}
		})
	}
}

// A scan from an address of ::/8 (::1:2:3:4, not IPv4-mapped) is counted
// and blocked per address: its /64 is ::/64, which holds every IPv4-mapped
// address, and blocking it would cut the host off from all of IPv4.
func TestScanFromColonColonSlash8IsNotAggregated(t *testing.T) {
	d := newTestDP(t, defaults)
	for port := uint16(1); port <= 4; port++ {
		d.run(tcpSYN("::1:2:3:4", "2001:db8::1", 40000, port))
	}
	blocks, err := d.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || blocks[0].Prefix != mustPrefix("::1:2:3:4/128") {
		t.Fatalf("blocks %+v, want ::1:2:3:4 alone", blocks)
	}
	expectVerdict(t, d.run(tcpSYN("192.0.2.56", "192.0.2.1", 40000, 80)), xdpPass, "an IPv4 client after the scan")
	expectVerdict(t, d.run(tcpSYN("::1:2:3:5", "2001:db8::1", 40000, 80)), xdpPass, "a neighbour in ::/64")
}
