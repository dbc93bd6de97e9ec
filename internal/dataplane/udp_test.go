package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// The host's own addresses in these tests.
var (
	host4 = "192.0.2.1"
	host6 = "2001:db8::1"
)

// newHostDP is a program of hook h that runs in a namespace of its own and
// knows host4 and host6 as the host's addresses: closed ports are those
// nothing in that namespace holds.
func newHostDP(t *testing.T, h Hook, s Settings) *testDP {
	t.Helper()
	d := newTestDPWith(t, s, Options{firstAttemptSlots: testFirstAttemptSlots, Hook: h})
	d.ns = newNetns(t)
	if err := d.SetLocalAddrs([]netip.Addr{netip.MustParseAddr(host4), netip.MustParseAddr(host6)}); err != nil {
		t.Fatal(err)
	}
	return d
}

// scans returns the scan events among the drained events.
func (d *testDP) scans() []*Scan {
	d.t.Helper()
	var out []*Scan
	for _, ev := range d.drain() {
		if s, ok := ev.(*Scan); ok {
			out = append(out, s)
		}
	}
	return out
}

func portList(s *Scan) string {
	ps := make([]ports.Port, len(s.Ports))
	for i, p := range s.Ports {
		ps[i] = p.Port
	}
	return ports.Join(ps)
}

func TestUDPToClosedPortsIsAScan(t *testing.T) { forEachHook(t, testUDPToClosedPortsIsAScan) }

func testUDPToClosedPortsIsAScan(t *testing.T, h Hook) {
	for _, c := range []struct {
		src, dst string
		open     []uint16 // held by a socket for this family
		closed   uint16   // held by a socket of the other family only
	}{
		{"198.51.100.7", host4, []uint16{5301, 5303}, 5302},
		{"2001:db8:1::7", host6, []uint16{5302, 5303}, 5301},
	} {
		t.Run(c.src, func(t *testing.T) {
			d := newHostDP(t, h, defaults)
			d.ns.listenUDP(t, "udp4", "0.0.0.0:5301")
			d.ns.listenUDP(t, "udp6", "[::]:5302") // IPv6 only
			d.ns.listenUDP(t, "udp", "[::]:5303")  // dual-stack
			for range 5 {
				for i, port := range c.open {
					expectVerdict(t, d.run(udpDatagram(c.src, c.dst, 40000+uint16(i), port)), xdpPass, fmt.Sprintf("datagram to open port %d", port))
				}
			}
			if k := d.counters(); k.UDPAttempts != 0 {
				t.Fatalf("%d datagrams to ports with a socket counted", k.UDPAttempts)
			}
			expectVerdict(t, d.run(udpDatagram(c.src, c.dst, 40000, c.closed)), xdpPass, "1st closed port (the other family's socket)")
			expectVerdict(t, d.run(udpDatagram(c.src, c.dst, 40000, 161)), xdpPass, "2nd closed port")
			expectVerdict(t, d.run(udpDatagram(c.src, c.dst, 40000, 500)), xdpPass, "3rd closed port")
			expectVerdict(t, d.run(udpDatagram(c.src, c.dst, 40000, 53)), xdpDrop, "4th closed port")
			expectVerdict(t, d.run(udpDatagram(c.src, c.dst, 40000, c.open[0])), xdpDrop, "an open port, once blocked")
			scans := d.scans()
			if len(scans) != 1 {
				t.Fatalf("%d scan events, want 1", len(scans))
			}
			want := fmt.Sprintf("53/udp,161/udp,500/udp,%d/udp", c.closed)
			if got := portList(scans[0]); got != want || !scans[0].Blocked || scans[0].ReportOnly {
				t.Errorf("scan on %s (blocked %v, report only %v), want %s, blocked", got, scans[0].Blocked, scans[0].ReportOnly, want)
			}
			if k := d.counters(); k.UDPAttempts != 4 || k.UDPScansDetected != 1 || k.ScansDetected != 1 || k.NewConnections != 0 {
				t.Errorf("counters %+v: want 4 UDP attempts, 1 UDP scan, no connection", k)
			}
		})
	}
}

func TestUDPAndTCPPortsAreDistinct(t *testing.T) {
	d := newHostDP(t, HookXDP, defaults)
	src := "198.51.100.8"
	expectVerdict(t, d.run(udpDatagram(src, host4, 40000, 53)), xdpPass, "53/udp")
	expectVerdict(t, d.run(tcpSYN(src, host4, 40000, 53)), xdpPass, "53/tcp")
	expectVerdict(t, d.run(udpDatagram(src, host4, 40000, 54)), xdpPass, "54/udp")
	expectVerdict(t, d.run(tcpSYN(src, host4, 40000, 54)), xdpDrop, "54/tcp: the 4th distinct port")
	scans := d.scans()
	if len(scans) != 1 || portList(scans[0]) != "53,54,53/udp,54/udp" {
		t.Fatalf("scans %v, want one on 53,54,53/udp,54/udp", scans)
	}
}

func TestRepeatedDatagramsCountOnce(t *testing.T) {
	d := newHostDP(t, HookXDP, defaults)
	src := "198.51.100.9"
	for port := uint16(1); port <= 3; port++ {
		for i := range 5 {
			expectVerdict(t, d.run(udpDatagram(src, host4, 40000+uint16(i), port)), xdpPass, fmt.Sprintf("datagram %d to %d/udp", i, port))
		}
	}
	if len(d.scans()) != 0 {
		t.Fatal("15 datagrams to 3 ports made a scan")
	}
	expectVerdict(t, d.run(udpDatagram(src, host4, 40000, 4)), xdpDrop, "a 4th port")
}

func TestUDPThatNeverCounts(t *testing.T) {
	s := defaults
	s.IgnorePorts = ports.List{{Lo: 7010, Hi: 7019, UDP: true}}
	s.Ephemeral = [2]uint16{32768, 60999}
	d := newHostDP(t, HookXDP, s)
	var served []ports.Port
	for n := uint16(7000); n < 7010; n++ {
		served = append(served, ports.Port{Num: n, Proto: ports.UDP})
	}
	if err := d.SetServed(served); err != nil {
		t.Fatal(err)
	}
	src := "198.51.100.10"
	for _, c := range []struct {
		what  string
		dst   string
		sport uint16
		dport func(i uint16) uint16
	}{
		{"served (DNAT) ports", host4, 40000, func(i uint16) uint16 { return 7000 + i }},
		{"ignored ports", host4, 40000, func(i uint16) uint16 { return 7010 + i }},
		{"late answers from port 53", host4, 53, func(i uint16) uint16 { return 33000 + i }},
		{"late answers over IPv6", host6, 123, func(i uint16) uint16 { return 60990 + i }},
		{"broadcast", "255.255.255.255", 40000, func(i uint16) uint16 { return 100 + i }},
		{"a subnet's broadcast", "192.0.2.255", 40000, func(i uint16) uint16 { return 100 + i }},
		{"multicast", "224.0.0.251", 40000, func(i uint16) uint16 { return 100 + i }},
		{"IPv6 multicast", "ff02::fb", 40000, func(i uint16) uint16 { return 100 + i }},
		{"forwarded traffic", "203.0.113.9", 40000, func(i uint16) uint16 { return 100 + i }},
	} {
		from := src
		if netip.MustParseAddr(c.dst).Is6() {
			from = "2001:db8:1::10"
		}
		for i := range uint16(10) {
			expectVerdict(t, d.run(udpDatagram(from, c.dst, c.sport, c.dport(i))), xdpPass, c.what)
		}
		if k := d.counters(); k.UDPAttempts != 0 {
			t.Fatalf("%s: %d datagrams counted", c.what, k.UDPAttempts)
		}
	}
	// The exemptions are UDP's: TCP 7010-7013 count, and so does a
	// datagram from a well-known port outside the ephemeral range.
	expectVerdict(t, d.run(udpDatagram(src, host4, 53, 1000)), xdpPass, "from port 53, below the ephemeral range")
	for n := uint16(7010); n < 7012; n++ {
		expectVerdict(t, d.run(tcpSYN(src, host4, 40000, n)), xdpPass, fmt.Sprintf("SYN to %d", n))
	}
	expectVerdict(t, d.run(tcpSYN(src, host4, 40000, 7012)), xdpDrop, "the 4th counted port")
}

func TestUDPScansOff(t *testing.T) {
	s := defaults
	s.UDPScans = UDPOff
	d := newHostDP(t, HookXDP, s)
	for port := uint16(1); port <= 10; port++ {
		expectVerdict(t, d.run(udpDatagram("198.51.100.11", host4, 40000, port)), xdpPass, fmt.Sprintf("%d/udp", port))
	}
	if k := d.counters(); k.UDPAttempts != 0 || len(d.scans()) != 0 {
		t.Errorf("UDP counted with --udp-scans off: %+v", k)
	}
}

func TestUDPScansReportOnly(t *testing.T) {
	s := defaults
	s.UDPScans = UDPReport
	d := newHostDP(t, HookXDP, s)
	src := "198.51.100.12"
	for port := uint16(1); port <= 8; port++ {
		expectVerdict(t, d.run(udpDatagram(src, host4, 40000, port)), xdpPass, fmt.Sprintf("%d/udp", port))
	}
	scans := d.scans()
	if len(scans) != 1 || !scans[0].ReportOnly || scans[0].Blocked || portList(scans[0]) != "1/udp,2/udp,3/udp,4/udp" {
		t.Fatalf("scans %+v, want one report-only scan on 1-4/udp", scans)
	}
	if blocks, err := d.Blocks(); err != nil || len(blocks) != 0 {
		t.Fatalf("blocks %v (%v) with --udp-scans report, want none", blocks, err)
	}
	// TCP is not UDP: a SYN past the threshold is a TCP scan, and blocked.
	expectVerdict(t, d.run(tcpSYN(src, host4, 40000, 80)), xdpDrop, "a SYN past the threshold")
	if scans := d.scans(); len(scans) != 1 || !scans[0].Blocked {
		t.Errorf("scans %+v, want the SYN's, blocked", scans)
	}
}

func TestCountClosedSYNs(t *testing.T) { forEachHook(t, testCountClosedSYNs) }

func testCountClosedSYNs(t *testing.T, h Hook) {
	s := defaults
	s.CountClosed = true
	d := newHostDP(t, h, s)
	open := []uint16{9100, 9187, 9121, 9113, 8080, 9256}
	for _, p := range open[:3] {
		d.ns.listenTCP(t, "tcp4", fmt.Sprintf("0.0.0.0:%d", p))
	}
	for _, p := range open[3:5] {
		d.ns.listenTCP(t, "tcp", fmt.Sprintf("[::]:%d", p)) // dual-stack
	}
	if err := d.SetServed([]ports.Port{{Num: 9256}}); err != nil { // DNAT'd: no socket here
		t.Fatal(err)
	}
	for _, c := range []struct{ src, dst string }{{"198.51.100.13", host4}, {"2001:db8:1::13", host6}} {
		for round := range uint16(3) {
			for _, p := range open {
				if netip.MustParseAddr(c.src).Is6() && slices.Contains(open[:3], p) {
					continue // IPv4 only
				}
				expectVerdict(t, d.run(tcpSYN(c.src, c.dst, 40000+round, p)), xdpPass, fmt.Sprintf("SYN to open port %d", p))
			}
		}
		expectVerdict(t, d.run(tcpSYN(c.src, "203.0.113.9", 40000, 22)), xdpPass, "SYN to a forwarded address")
		if len(d.scans()) != 0 {
			t.Fatalf("%s: SYNs to open ports made a scan", c.src)
		}
		for p := uint16(1); p <= 3; p++ {
			expectVerdict(t, d.run(tcpSYN(c.src, c.dst, 40000, p)), xdpPass, fmt.Sprintf("closed port %d", p))
		}
		expectVerdict(t, d.run(tcpSYN(c.src, c.dst, 40000, 4)), xdpDrop, "the 4th closed port")
		scans := d.scans()
		if len(scans) != 1 || portList(scans[0]) != "1,2,3,4" {
			t.Fatalf("%s: scans %+v, want one on 1,2,3,4", c.src, scans)
		}
	}
	// Uncounted SYNs are still connections, each attempt once.
	k := d.counters()
	if want := uint64(3*6 + 3*3 + 2 + 6); k.NewConnections != want {
		t.Errorf("%d connections reported, want %d", k.NewConnections, want)
	}
}

// A datagram answering a connection conntrack holds (the host's query, or
// a container's through its NAT) is no attempt, though its socket is
// gone: conntrack knows it as the reply.
func TestConntrackRepliesNeverCount(t *testing.T) { forEachHook(t, testConntrackRepliesNeverCount) }

func testConntrackRepliesNeverCount(t *testing.T, h Hook) {
	testenv.RequireCommand(t, "nft")
	d := newHostDP(t, h, defaults)
	if err := d.SetLocalAddrs([]netip.Addr{netip.MustParseAddr("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	// Conntrack follows a namespace's traffic once a rule needs it.
	err := d.ns.do(func() error {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader("table inet hbftest { chain in { type filter hook input priority 0; ct state established accept; }; }")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	d.ns.listenUDP(t, "udp4", "127.0.0.1:7000") // receives, never answers
	var queries []uint16
	for range 5 {
		var c net.Conn
		if err := d.ns.do(func() (err error) { c, err = net.Dial("udp4", "127.0.0.1:7000"); return err }); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("query")); err != nil {
			t.Fatal(err)
		}
		queries = append(queries, uint16(c.LocalAddr().(*net.UDPAddr).Port))
		c.Close() // the answer comes late
	}
	for _, port := range queries {
		expectVerdict(t, d.run(udpDatagram("127.0.0.1", "127.0.0.1", 7000, port)), xdpPass, fmt.Sprintf("late answer to %d", port))
	}
	if k := d.counters(); k.UDPAttempts != 0 {
		t.Fatalf("%d answers to the host's own queries counted", k.UDPAttempts)
	}
	// The same datagrams from another port answer nothing.
	for i, port := range queries {
		want := uint32(xdpPass)
		if i >= 3 { // the 4th port blocks the source
			want = xdpDrop
		}
		expectVerdict(t, d.run(udpDatagram("127.0.0.1", "127.0.0.1", 7001, port)), want, fmt.Sprintf("unsolicited datagram to %d", port))
	}
}

// A UDP server's port found open stays open for about a second without a
// lookup, then is looked up again: a port whose server has gone counts
// again as closed once that second has passed.
func TestOpenPortsAreRememberedBriefly(t *testing.T) {
	d := newHostDP(t, HookXDP, defaults)
	var c net.PacketConn
	if err := d.ns.do(func() (err error) { c, err = net.ListenPacket("udp4", "0.0.0.0:5400"); return err }); err != nil {
		t.Fatal(err)
	}
	src := "198.51.100.20"
	expectVerdict(t, d.run(udpDatagram(src, host4, 40000, 5400)), xdpPass, "to the open port")
	c.Close()
	expectVerdict(t, d.run(udpDatagram(src, host4, 40001, 5400)), xdpPass, "right after the server closed")
	if k := d.counters(); k.UDPAttempts != 0 {
		t.Fatalf("%d attempts counted within the second", k.UDPAttempts)
	}
	d.advance(1500 * time.Millisecond)
	expectVerdict(t, d.run(udpDatagram(src, host4, 40002, 5400)), xdpPass, "1.5 s after")
	if k := d.counters(); k.UDPAttempts != 1 {
		t.Errorf("%d attempts counted 1.5 s after the server closed, want 1", k.UDPAttempts)
	}
}
