package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// The parsing rules of docs/security.md, one table row each: the verdict,
// the drop counter that moved, and whether a connection was reported.

const (
	srcPort = 40000
	dstPort = 8080
)

var (
	clean4   = tcpSYN("192.0.2.56", "192.0.2.1", srcPort, dstPort)
	clean6   = tcpSYN("2001:db8::56", "2001:db8::1", srcPort, dstPort)
	blocked4 = tcpSYN("203.0.113.66", "192.0.2.1", srcPort, dstPort)
	blocked6 = tcpSYN("2001:db8:bad::66", "2001:db8::1", srcPort, dstPort)
)

// parseBlocks are in force for every row.
var parseBlocks = []string{"203.0.113.66/32", "198.51.100.0/24", "2001:db8:bad::/48"}

type parseCase struct {
	name   string
	frame  []byte
	want   uint32     // verdict
	reason DropReason // for DROP
	conn   bool       // a connection srcPort -> dstPort is reported
	udp    bool       // a UDP attempt on a closed port is counted
}

// hostAddrs are the host's own addresses in the table and the fuzz test:
// UDP to them counts, there being no socket in their namespace.
var hostAddrs = []string{"192.0.2.1/32", "2001:db8::1/128"}

// onHost makes the program run in a namespace of its own, without sockets,
// and know hostAddrs as the host's.
func (d *testDP) onHost(t testing.TB) {
	t.Helper()
	d.ns = newNetns(t)
	var addrs []netip.Addr
	for _, p := range hostAddrs {
		addrs = append(addrs, netip.MustParsePrefix(p).Addr())
	}
	if err := d.SetLocalAddrs(addrs); err != nil {
		t.Fatal(err)
	}
}

// l3 is where the IP header of f starts.
func l3(f frame) int { return 14 + 4*len(f.vlans) }

// patched is f's bytes with patch applied at the IP header.
func patched(f frame, patch func(ip []byte)) []byte {
	b := f.raw()
	patch(b[l3(f):])
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}

func setTotLen(ip []byte, n int) { binary.BigEndian.PutUint16(ip[2:], uint16(n)) }
func setPayLen(ip []byte, n int) { binary.BigEndian.PutUint16(ip[4:], uint16(n)) }

func extLen(f frame) (n int) {
	for _, e := range f.ext {
		n += len(e.bytes(0))
	}
	return n
}

// firstFragment4 is an IPv4 first fragment holding tcpBytes bytes of TCP.
func firstFragment4(base frame, tcpBytes int) []byte {
	f := base.with(func(f *frame) { f.moreFrags = true; f.tcpOptions = []byte{2, 4, 5, 0xb4} })
	b := f.raw()[:l3(f)+20+tcpBytes]
	setTotLen(b[l3(f):], 20+tcpBytes)
	return b
}

// firstFragment6 is an IPv6 first fragment holding tcpBytes bytes of TCP.
func firstFragment6(base frame, tcpBytes int) []byte {
	f := base.with(func(f *frame) {
		f.ext = append(slices.Clone(f.ext), ext6{typ: 44, more: true})
		f.tcpOptions = []byte{2, 4, 5, 0xb4}
	})
	n := extLen(f) + tcpBytes
	b := f.raw()[:l3(f)+40+n]
	setPayLen(b[l3(f):], n)
	return b
}

func parseCases() []parseCase {
	drop := func(name string, b []byte, r DropReason) parseCase {
		return parseCase{name: name, frame: b, want: xdpDrop, reason: r}
	}
	report := func(name string, b []byte) parseCase {
		return parseCase{name: name, frame: b, want: xdpPass, conn: true}
	}
	pass := func(name string, b []byte) parseCase {
		return parseCase{name: name, frame: b, want: xdpPass}
	}
	counted := func(name string, b []byte) parseCase {
		return parseCase{name: name, frame: b, want: xdpPass, udp: true}
	}
	dgram4 := udpDatagram("192.0.2.56", "192.0.2.1", srcPort, dstPort)
	dgram6 := udpDatagram("2001:db8::56", "2001:db8::1", srcPort, dstPort)
	vlan := func(f frame, vids ...uint16) frame { return f.with(func(f *frame) { f.vlans = vids }) }
	exts := func(f frame, e ...ext6) frame { return f.with(func(f *frame) { f.ext = e }) }
	udp := func(f frame) frame { return f.with(func(f *frame) { f.proto = 17; f.payload = make([]byte, 8) }) }
	ihl := func(f frame, words byte) []byte {
		return patched(f, func(ip []byte) { ip[0] = 0x40 | words })
	}
	fragAt := func(f frame, units uint16) frame { return f.with(func(f *frame) { f.fragOffset = units }) }

	return []parseCase{
		// The source check needs only the IP header, whatever follows.
		drop("blocked IPv4 SYN", blocked4.bytes(), DropBlocked),
		drop("blocked IPv6 SYN", blocked6.bytes(), DropBlocked),
		drop("blocked source, UDP", udp(blocked4).bytes(), DropBlocked),
		drop("blocked source, IHL 3", ihl(blocked4, 3), DropBlocked),
		drop("blocked source, later fragment", fragAt(blocked4, 100).bytes(), DropBlocked),
		drop("blocked source, tiny first fragment", firstFragment4(blocked4, 8), DropBlocked),
		drop("blocked source, QinQ", vlan(blocked6, 10, 20).bytes(), DropBlocked),
		drop("blocked source, 9 extension headers", exts(blocked6, slices.Repeat([]ext6{{typ: 60}}, 9)...).bytes(), DropBlocked),
		drop("blocked source, unknown next header", exts(blocked6).with(func(f *frame) { f.proto = 253 }).bytes(), DropBlocked),
		drop("blocked source, IPv6 header only", func() []byte {
			b := exts(blocked6, ext6{typ: 0}).raw()
			return b[:14+40]
		}(), DropBlocked),
		drop("blocked prefix", tcpSYN("198.51.100.9", "192.0.2.1", srcPort, dstPort).bytes(), DropBlocked),

		// IPv4-mapped IPv6 sources are the IPv4 address.
		drop("::ffff: source of a blocked IPv4 address", tcpSYN("::ffff:203.0.113.66", "2001:db8::1", srcPort, dstPort).bytes(), DropBlocked),
		drop("::ffff: source inside a blocked IPv4 prefix", tcpSYN("::ffff:198.51.100.200", "2001:db8::1", srcPort, dstPort).bytes(), DropBlocked),
		report("::ffff: source, not blocked", tcpSYN("::ffff:192.0.2.56", "2001:db8::1", srcPort, dstPort).bytes()),

		// VLAN: up to two tags of either TPID; a deeper stack is dropped.
		report("802.1Q", vlan(clean4, 100).bytes()),
		report("802.1ad + 802.1Q", vlan(clean6, 10, 100).bytes()),
		report("802.1Q + 802.1Q", vlan(clean4, 10, 100).with(func(f *frame) { f.tpids = []uint16{0x8100, 0x8100} }).bytes()),
		report("802.1ad alone", vlan(clean4, 100).with(func(f *frame) { f.tpids = []uint16{0x88a8} }).bytes()),
		drop("three tags", vlan(clean4, 1, 2, 3).bytes(), DropVLANDepth),
		drop("three tags, blocked source", vlan(blocked4, 1, 2, 3).bytes(), DropVLANDepth),
		drop("tag cut short", vlan(clean4, 100).raw()[:16], DropMalformed),
		pass("0x9100 tag: no IP for the kernel either", vlan(clean4, 100).with(func(f *frame) { f.tpids = []uint16{0x9100} }).bytes()),

		// IPv4 header.
		report("IPv4 options, IHL 6", clean4.with(func(f *frame) { f.ipOptions = []byte{1, 1, 1, 1} }).bytes()),
		report("IPv4 options, IHL 15", clean4.with(func(f *frame) { f.ipOptions = append([]byte{7, 39, 4}, make([]byte, 37)...) }).bytes()),
		drop("IHL 0", ihl(clean4, 0), DropMalformed),
		drop("IHL 4", ihl(clean4, 4), DropMalformed),
		drop("IHL past the frame", func() []byte {
			b := clean4.raw()
			b[14] = 0x4f // 60 bytes of header in a 40-byte datagram
			return b
		}(), DropMalformed),
		drop("IHL past the frame, UDP", func() []byte {
			b := udp(clean4).raw()
			b[14] = 0x4f // 60 bytes of header in a 56-byte frame
			return b[:14+20+8]
		}(), DropMalformed),
		drop("total length below IHL", patched(clean4, func(ip []byte) { setTotLen(ip, 19) }), DropMalformed),
		drop("total length cuts the TCP header", patched(clean4, func(ip []byte) { setTotLen(ip, 20+19) }), DropMalformed),
		report("total length 0 (BIG TCP): the frame bounds it", patched(clean4, func(ip []byte) { setTotLen(ip, 0) })),
		drop("version 6 in an IPv4 frame", patched(clean4, func(ip []byte) { ip[0] = 0x65 }), DropMalformed),
		drop("IPv4 header cut short", clean4.raw()[:14+19], DropMalformed),
		pass("UDP", udp(clean4).bytes()),

		// IPv6 extension headers: walked up to eight; unknown values are the upper layer.
		report("hop-by-hop", exts(clean6, ext6{typ: 0}).bytes()),
		report("routing", exts(clean6, ext6{typ: 43}).bytes()),
		report("destination options", exts(clean6, ext6{typ: 60}).bytes()),
		report("AH", exts(clean6, ext6{typ: 51}).bytes()),
		report("atomic fragment", exts(clean6, ext6{typ: 44}).bytes()),
		report("all five", exts(clean6, ext6{typ: 0}, ext6{typ: 60}, ext6{typ: 43}, ext6{typ: 44}, ext6{typ: 51}).bytes()),
		report("eight headers", exts(clean6, slices.Repeat([]ext6{{typ: 60}}, 8)...).bytes()),
		drop("nine headers", exts(clean6, slices.Repeat([]ext6{{typ: 60}}, 9)...).bytes(), DropExtDepth),
		drop("chain past 2048 bytes", exts(clean6, ext6{typ: 60, units: 150}, ext6{typ: 60, units: 150}).bytes(), DropExtDepth),
		drop("eight headers ending past 2048 bytes", exts(clean6, slices.Repeat([]ext6{{typ: 60, units: 32}}, 8)...).bytes(), DropExtDepth),
		report("one large header", exts(clean6, ext6{typ: 60, units: 200}).bytes()),
		drop("payload length cuts an extension header", patched(exts(clean6, ext6{typ: 0}), func(ip []byte) { setPayLen(ip, 1) }), DropMalformed),
		pass("unknown next header, TCP behind it", func() []byte {
			b := exts(clean6, ext6{typ: 60}).raw()
			b[14+6] = 253 // the header before TCP is an upper layer, not walked
			return b
		}()),
		pass("ESP", clean6.with(func(f *frame) { f.proto = 50; f.payload = make([]byte, 24) }).bytes()),
		pass("no next header", clean6.with(func(f *frame) { f.proto = 59 }).bytes()),
		drop("extension header cut short", exts(clean6, ext6{typ: 60}).raw()[:14+40+1], DropMalformed),
		drop("payload length cuts the TCP header", patched(clean6, func(ip []byte) { setPayLen(ip, 19) }), DropMalformed),
		report("payload length 0 (jumbogram, BIG TCP): the frame bounds it", patched(clean6, func(ip []byte) { setPayLen(ip, 0) })),
		drop("version 4 in an IPv6 frame", patched(clean6, func(ip []byte) { ip[0] = 0x45 }), DropMalformed),

		// Fragments.
		pass("IPv4 later fragment", fragAt(clean4, 3).bytes()),
		pass("IPv4 later fragment, UDP at offset 8", fragAt(udp(clean4), 1).bytes()),
		drop("IPv4 TCP fragment at offset 8 (RFC 1858 overlap)", fragAt(clean4, 1).bytes(), DropTinyFragment),
		report("IPv4 first fragment with the whole TCP header", firstFragment4(clean4, 24)),
		drop("IPv4 first fragment, 8 bytes of TCP (nmap -f)", firstFragment4(clean4, 8), DropTinyFragment),
		drop("IPv4 first fragment, 16 bytes of TCP (nmap -ff)", firstFragment4(clean4, 16), DropTinyFragment),
		drop("IPv4 first fragment, TCP options cut", firstFragment4(clean4, 20), DropTinyFragment),
		report("IPv6 first fragment with the whole TCP header", firstFragment6(clean6, 24)),
		drop("IPv6 first fragment, 8 bytes of TCP", firstFragment6(clean6, 8), DropTinyFragment),
		drop("IPv6 first fragment, header chain cut", func() []byte {
			f := exts(clean6, ext6{typ: 44, more: true}, ext6{typ: 60, units: 3})
			b := f.raw()[:14+40+8+16]
			setPayLen(b[14:], 8+16)
			return b
		}(), DropTinyFragment),
		pass("IPv6 later fragment", exts(clean6, ext6{typ: 44, fragOff: 3}).bytes()),
		drop("IPv6 TCP fragment at offset 8", exts(clean6, ext6{typ: 44, fragOff: 1}).bytes(), DropTinyFragment),

		// TCP header.
		report("TCP options", clean4.with(func(f *frame) { f.tcpOptions = []byte{2, 4, 5, 0xb4, 4, 2, 8, 10} }).bytes()),
		drop("TCP data offset 4", patched(clean4, func(ip []byte) { ip[20+12] = 4 << 4 }), DropMalformed),
		drop("TCP options past the frame", func() []byte {
			b := clean4.with(func(f *frame) { f.tcpOptions = make([]byte, 8) }).raw()
			return b[:len(b)-4]
		}(), DropMalformed),
		drop("TCP header cut short", clean4.raw()[:14+20+12], DropMalformed),

		// UDP header: 8 bytes, whole in the frame and the datagram.
		counted("UDP to a closed port", dgram4.bytes()),
		counted("IPv6 UDP to a closed port", dgram6.bytes()),
		counted("UDP behind IPv6 extension headers", exts(dgram6, ext6{typ: 0}, ext6{typ: 60}, ext6{typ: 44}).bytes()),
		counted("UDP, IPv4 options", dgram4.with(func(f *frame) { f.ipOptions = []byte{1, 1, 1, 1} }).bytes()),
		counted("::ffff: source, UDP", udpDatagram("::ffff:192.0.2.56", "2001:db8::1", srcPort, dstPort).bytes()),
		pass("UDP to an address not the host's", udpDatagram("192.0.2.56", "203.0.113.1", srcPort, dstPort).bytes()),
		pass("UDP late answer (port 0 into the empty ephemeral range)", udpDatagram("192.0.2.56", "192.0.2.1", 0, 0).bytes()),
		drop("UDP header cut short", dgram4.raw()[:14+20+7], DropMalformed),
		drop("total length cuts the UDP header", patched(dgram4, func(ip []byte) { setTotLen(ip, 20+7) }), DropMalformed),
		drop("payload length cuts the UDP header", patched(dgram6, func(ip []byte) { setPayLen(ip, 7) }), DropMalformed),
		drop("blocked source, UDP header cut short", udpDatagram("203.0.113.66", "192.0.2.1", srcPort, dstPort).raw()[:14+20+4], DropBlocked),
		counted("IPv4 first fragment with the whole UDP header", func() []byte {
			b := dgram4.with(func(f *frame) { f.moreFrags = true }).raw()
			return b[:14+20+8]
		}()),
		drop("IPv4 first fragment, 4 bytes of UDP", func() []byte {
			b := dgram4.with(func(f *frame) { f.moreFrags = true }).raw()[:14+20+4]
			setTotLen(b[14:], 20+4)
			return b
		}(), DropTinyFragment),
		drop("IPv6 first fragment, 4 bytes of UDP", func() []byte {
			f := exts(dgram6, ext6{typ: 44, more: true})
			b := f.raw()[:14+40+8+4]
			setPayLen(b[14:], 8+4)
			return b
		}(), DropTinyFragment),
		pass("IPv6 later fragment of UDP at offset 8", exts(dgram6, ext6{typ: 44, fragOff: 1}).bytes()),
		pass("IPv4 later fragment of UDP", fragAt(dgram4, 1).bytes()),

		// Not IP.
		pass("ARP", func() []byte { b := make([]byte, 60); b[12], b[13] = 0x08, 0x06; return b }()),
		pass("LLDP", func() []byte { b := make([]byte, 60); b[12], b[13] = 0x88, 0xcc; return b }()),
	}
}

func TestParsingRules(t *testing.T) { forEachHook(t, testParsingRules) }

func testParsingRules(t *testing.T, h Hook) {
	d := newTestDPWith(t, defaults, Options{firstAttemptSlots: testFirstAttemptSlots, Hook: h})
	for _, p := range parseBlocks {
		d.mustBlock(p, noExpiry)
	}
	d.onHost(t)
	d.unthrottledLimits(t)
	o := oracle{blocked: holds(parseBlocks), allowed: holds(nil), local: holds(hostAddrs)}
	reported, gopacketAgreed := 0, 0
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			// The fuzz test's oracle reads the rules as this table does, and
			// finds the connection where gopacket does.
			rule := o.decide(tc.frame)
			if rule.verdict != tc.want || rule.verdict == xdpDrop && rule.reason != tc.reason || rule.conn != tc.conn || rule.udp != tc.udp {
				t.Errorf("the oracle says %s (connection: %v, UDP attempt: %v)", rule, rule.conn, rule.udp)
			}
			if tc.conn {
				reported++
			}
			if src, dst, ok := gopacketConnection(tc.frame); ok && rule.conn {
				if src != rule.src || dst != rule.dst {
					t.Errorf("the oracle reads %v -> %v, gopacket %v -> %v", rule.src, rule.dst, src, dst)
				}
				gopacketAgreed++
			}
			d.forgetTrackers() // so that no row repeats another's attempt
			before := d.counters()
			got, err := d.runFrame(tc.frame)
			if errors.Is(err, errNoSkb) {
				t.Skip(err)
			}
			if err != nil {
				t.Fatal(err)
			}
			after := d.counters()

			expectVerdict(t, got, tc.want, "verdict")
			if n := after.UDPAttempts - before.UDPAttempts; (n == 1) != tc.udp || n > 1 {
				t.Errorf("%d UDP attempts counted, want %v", n, tc.udp)
			}
			for _, r := range allDropReasons() {
				want := uint64(0)
				if tc.want == xdpDrop && r == tc.reason {
					want = 1
				}
				if n := after.Dropped[r] - before.Dropped[r]; n != want {
					t.Errorf("drops for %s: %d, want %d", r, n, want)
				}
			}
			events := d.drain()
			if !tc.conn {
				if len(events) != 0 {
					t.Errorf("events %v, want none", events)
				}
				return
			}
			if len(events) != 1 {
				t.Fatalf("events %v, want one connection", events)
			}
			c, ok := events[0].(*Connection)
			if !ok || c.Src != rule.src || c.Dst != rule.dst {
				t.Errorf("event %v, want a connection %v -> %v", events[0], rule.src, rule.dst)
			}
		})
	}
	// gopacket stops at fragments, routing header type 1 and BIG TCP.
	if gopacketAgreed*3 < reported*2 {
		t.Errorf("gopacket decoded %d of %d reported connections, want two thirds at least", gopacketAgreed, reported)
	}
}

// forgetTrackers empties the scan tracker, so that the next SYN is a new
// attempt whatever came before.
func (d *testDP) forgetTrackers() {
	d.t.Helper()
	if err := d.emptyTracker(); err != nil {
		d.t.Fatal(err)
	}
}

// IPv4 and ::ffff: IPv6 packets of one source share one scan state: ports
// tried over either count together.
func TestMappedSourceSharesScanState(t *testing.T) {
	d := newTestDP(t, defaults)
	for port := uint16(1); port <= 2; port++ {
		expectVerdict(t, d.run(tcpSYN("192.0.2.77", "192.0.2.1", 40000, port)), xdpPass, "IPv4 SYN")
	}
	expectVerdict(t, d.run(tcpSYN("::ffff:192.0.2.77", "2001:db8::1", 40000, 3)), xdpPass, "mapped SYN")
	expectVerdict(t, d.run(tcpSYN("::ffff:192.0.2.77", "2001:db8::1", 40000, 4)), xdpDrop, "mapped SYN crossing")
	expectVerdict(t, d.run(tcpSYN("192.0.2.77", "192.0.2.1", 40000, 1)), xdpDrop, "IPv4 after the block")

	var scan *Scan
	for _, ev := range d.drain() {
		if s, ok := ev.(*Scan); ok {
			scan = s
		}
	}
	if scan == nil || scan.Src != netip.MustParseAddr("192.0.2.77") || !slices.Equal(portsOf(scan), []uint16{1, 2, 3, 4}) {
		t.Fatalf("scan %+v, want 192.0.2.77 on ports 1,2,3,4", scan)
	}

	// An allowlisted IPv4 address is allowlisted as ::ffff: too.
	d.mustAllow("192.0.2.100/32")
	for port := uint16(1); port <= 5; port++ {
		expectVerdict(t, d.run(tcpSYN("::ffff:192.0.2.100", "2001:db8::1", 40000, port)), xdpPass, "allowlisted, mapped")
	}
	if c := d.counters(); c.ScansAllowlisted != 1 {
		t.Errorf("allowlisted scans %d, want 1", c.ScansAllowlisted)
	}
}

// Every fixture cut at every length: no ABORTED, no report from a partial
// header, every cut inside the headers dropped, and a blocked source never
// passes once its IP header is whole.
func TestTruncatedFrames(t *testing.T) { forEachHook(t, testTruncatedFrames) }

func testTruncatedFrames(t *testing.T, h Hook) {
	fixtures := map[string]struct {
		f     frame
		ipEnd int // bytes up to the end of the fixed IP header
	}{
		"IPv4":               {clean4, 14 + 20},
		"IPv6":               {clean6, 14 + 40},
		"::ffff: IPv6":       {tcpSYN("::ffff:192.0.2.56", "2001:db8::1", srcPort, dstPort), 14 + 40},
		"802.1Q IPv4":        {clean4.with(func(f *frame) { f.vlans = []uint16{7} }), 18 + 20},
		"QinQ IPv6":          {clean6.with(func(f *frame) { f.vlans = []uint16{7, 8} }), 22 + 40},
		"IPv4 options":       {clean4.with(func(f *frame) { f.ipOptions = make([]byte, 12) }), 14 + 20},
		"TCP options":        {clean4.with(func(f *frame) { f.tcpOptions = []byte{2, 4, 5, 0xb4, 1, 3, 3, 7} }), 14 + 20},
		"IPv6 ext":           {clean6.with(func(f *frame) { f.ext = []ext6{{typ: 0}, {typ: 44}, {typ: 51}} }), 14 + 40},
		"IPv4 first frag":    {clean4.with(func(f *frame) { f.moreFrags = true; f.payload = make([]byte, 16) }), 14 + 20},
		"IPv6 first frag":    {clean6.with(func(f *frame) { f.ext = []ext6{{typ: 44, more: true}}; f.payload = make([]byte, 16) }), 14 + 40},
		"QinQ IPv6 ext frag": {clean6.with(func(f *frame) { f.vlans = []uint16{1, 2}; f.ext = []ext6{{typ: 60}, {typ: 44, more: true}} }), 22 + 40},
		"UDP":                {udpDatagram("192.0.2.56", "192.0.2.1", srcPort, dstPort), 14 + 20},
		"UDP IPv6 ext frag":  {udpDatagram("2001:db8::56", "2001:db8::1", srcPort, dstPort).with(func(f *frame) { f.ext = []ext6{{typ: 0}, {typ: 44, more: true}} }), 14 + 40},
	}
	for name, fx := range fixtures {
		t.Run(name, func(t *testing.T) {
			d := newTestDPWith(t, defaults, Options{firstAttemptSlots: testFirstAttemptSlots, Hook: h})
			full := fx.f.raw()
			headersEnd := len(full) - len(fx.f.payload)
			for n := 14; n < len(full); n++ {
				v, err := d.runFrame(full[:n])
				if errors.Is(err, errNoSkb) {
					continue // the TC build cannot be run on it
				}
				if err != nil {
					t.Fatal(err)
				}
				if v == xdpAborted {
					t.Fatalf("%d bytes: ABORTED", n)
				}
				events := d.drain()
				if n < headersEnd && (v != xdpDrop || len(events) != 0) {
					t.Errorf("%d of %d header bytes: %s and events %v, want DROP and none", n, headersEnd, verdict(v), events)
				}
			}
			if c := d.counters(); c.Dropped[DropBlocked] != 0 || c.Dropped[DropScan] != 0 || c.Dropped[DropStealth] != 0 {
				t.Errorf("truncations dropped for a reason other than parsing: %v", c.Dropped)
			}

			d.mustBlock(netip.PrefixFrom(fx.f.src.Unmap(), fx.f.src.Unmap().BitLen()).String(), noExpiry)
			for n := fx.ipEnd; n <= len(full); n++ {
				expectVerdict(t, d.runBytes(full[:n]), xdpDrop, fmt.Sprintf("blocked source, %d bytes", n))
			}
		})
	}
}

// A blocked source is dropped in every fragment, the first and the later.
func TestBlockedSourceDroppedInEveryFragment(t *testing.T) {
	forEachHook(t, testBlockedSourceDroppedInEveryFragment)
}

func testBlockedSourceDroppedInEveryFragment(t *testing.T, h Hook) {
	d := newTestDPWith(t, defaults, Options{firstAttemptSlots: testFirstAttemptSlots, Hook: h})
	d.mustBlock("192.0.2.56/32", time.Time{})
	d.mustBlock("2001:db8::56/128", time.Time{})
	for _, f := range []frame{
		clean4.with(func(f *frame) { f.moreFrags = true }),
		clean4.with(func(f *frame) { f.fragOffset = 100 }),
		clean4.with(func(f *frame) { f.fragOffset = 100; f.proto = 17 }),
		clean6.with(func(f *frame) { f.ext = []ext6{{typ: 44, more: true}} }),
		clean6.with(func(f *frame) { f.ext = []ext6{{typ: 44, fragOff: 100}} }),
	} {
		expectVerdict(t, d.run(f), xdpDrop, fmt.Sprintf("fragment %+v", f))
	}
	if c := d.counters(); c.Dropped[DropBlocked] != 5 {
		t.Errorf("blocked drops %d, want 5", c.Dropped[DropBlocked])
	}
}
