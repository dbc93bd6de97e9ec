package dataplane

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// FuzzXDP runs the real program, both its builds (XDP and TC), on arbitrary
// frames and holds each one's verdict, drop reason and reported connection
// against the oracle. shape puts the
// fuzzed bytes behind a valid prefix (Ethernet, VLAN tags, an IPv4 or IPv6
// header, a fragment header) so that they reach the deeper rules, and picks
// the source address: clean, blocked, inside a blocked prefix, allowlisted
// inside one, IPv4-mapped.
//
// `go test` runs the seeds and testdata/fuzz/FuzzXDP; CI fuzzes for a short
// while and `make fuzz` for longer.
func FuzzXDP(f *testing.F) {
	var builds []*testDP
	for _, h := range hooks {
		d := newTestDPWith(f, defaults, Options{firstAttemptSlots: testFirstAttemptSlots, Hook: h})
		for _, p := range parseBlocks {
			d.mustBlock(p, noExpiry)
		}
		for _, p := range fuzzAllows {
			d.mustAllow(p)
		}
		d.onHost(f)
		d.unthrottledLimits(f)
		builds = append(builds, d)
	}
	o := oracle{blocked: holds(parseBlocks), allowed: holds(fuzzAllows), local: holds(hostAddrs)}

	for _, tc := range parseCases() {
		f.Add(uint8(shapeRaw), tc.frame)
	}
	syn := clean4.tcp()
	datagram := udpDatagram("192.0.2.56", host4, 40000, 161).raw()[14+20:]
	for shape := range uint8(numShapes) {
		f.Add(shape, syn)
		f.Add(shape|0x10, syn) // another source
		f.Add(shape|0x20, append([]byte{6}, syn...))
		f.Add(shape, datagram)
		f.Add(shape|0x20, append([]byte{17}, datagram...))
	}

	f.Fuzz(func(t *testing.T, shape uint8, body []byte) {
		frame := shaped(shape, body)
		if len(frame) < 14 || len(frame) > maxTestRunFrame {
			return // BPF_PROG_TEST_RUN takes neither
		}
		for _, d := range builds {
			holdToOracle(t, d, o, frame)
		}
	})
}

// holdToOracle runs one build of the program on frame and holds what it
// did against what the oracle says.
func holdToOracle(t *testing.T, d *testDP, o oracle, frame []byte) {
	t.Helper()
	if err := d.emptyTracker(); err != nil {
		t.Fatal(err)
	}
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.runFrame(frame)
	if errors.Is(err, errNoSkb) {
		return // the TC build cannot be run on it
	}
	if err != nil {
		t.Fatal(err)
	}
	after, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var conns []*Connection
	for {
		ev, err := d.events.Poll()
		if err != nil {
			t.Fatal(err)
		}
		if ev == nil {
			break
		}
		if c, ok := ev.(*Connection); ok {
			conns = append(conns, c)
		} else {
			t.Errorf("unexpected event %v", ev)
		}
	}

	want := o.decide(frame)
	if want.conn {
		if src, dst, ok := gopacketConnection(frame); ok && (src != want.src || dst != want.dst) {
			t.Errorf("the oracle reads %v -> %v, gopacket %v -> %v\nframe % x", want.src, want.dst, src, dst, frame)
		}
	}
	if got != want.verdict {
		t.Errorf("%s: verdict %s, the rules say %s\nframe % x", d.hook, verdict(got), want, frame)
	}
	for _, r := range allDropReasons() {
		n, w := after.Dropped[r]-before.Dropped[r], uint64(0)
		if want.verdict == xdpDrop && r == want.reason {
			w = 1
		}
		if n != w {
			t.Errorf("%d drops for %s, the rules say %s\nframe % x", n, r, want, frame)
		}
	}
	if n := after.UDPAttempts - before.UDPAttempts; (n == 1) != want.udp || n > 1 {
		t.Errorf("%s: %d UDP attempts counted, the rules say %v\nframe % x", d.hook, n, want.udp, frame)
	}
	if seen, passed := after.Packets-before.Packets, after.Passed-before.Passed; seen != 1 ||
		passed+after.DroppedTotal()-before.DroppedTotal() != 1 {
		t.Errorf("counted %d packets, %d passed, %d dropped: want one, passed or dropped\nframe % x",
			seen, passed, after.DroppedTotal()-before.DroppedTotal(), frame)
	}
	switch {
	case want.conn && (len(conns) != 1 || conns[0].Src != want.src || conns[0].Dst != want.dst):
		t.Errorf("connections %v, the rules say %v -> %v\nframe % x", conns, want.src, want.dst, frame)
	case !want.conn && len(conns) != 0:
		t.Errorf("connections %v, the rules say none\nframe % x", conns, frame)
	}
}

// The largest frame BPF_PROG_TEST_RUN accepts for XDP: a page less the
// headroom and the shared info.
const maxTestRunFrame = 3500

var (
	fuzzAllows = []string{"198.51.100.7/32"}
	fuzzSrc4   = []string{"192.0.2.56", "203.0.113.66", "198.51.100.9", "198.51.100.7"}
	fuzzSrc6   = []string{"2001:db8::56", "2001:db8:bad::1", "::ffff:203.0.113.66", "::ffff:198.51.100.7"}
)

// holds reports whether one of the prefixes holds a 16-byte address, IPv4
// prefixes taken as ::ffff:a.b.c.d/(96+bits) like the program's maps.
func holds(prefixes []string) func(netip.Addr) bool {
	var ps []netip.Prefix
	for _, s := range prefixes {
		p := netip.MustParsePrefix(s)
		if p.Addr().Is4() {
			p = netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), 96+p.Bits())
		}
		ps = append(ps, p)
	}
	return func(a netip.Addr) bool {
		return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
	}
}

// Prefixes the fuzzed bytes go behind; shape>>4 picks the source.
const (
	shapeRaw         = iota // the bytes are the frame
	shapeEthernet           // the bytes follow the MAC addresses: EtherType onwards
	shapeIPv4               // an IPv4 header (TCP, lengths fitted); the bytes are its payload
	shapeIPv6               // an IPv6 header; the first byte is its next header, the rest its payload
	shapeVLANIPv4           // shapeIPv4 behind an 802.1Q tag
	shapeQinQIPv6           // shapeIPv6 behind two tags
	shapeIPv4Frag           // shapeIPv4 as a first fragment
	shapeIPv6Frag           // shapeIPv6 with a fragment header (first fragment) before the bytes
	shapeIPv4UDP            // an IPv4 header (UDP, lengths fitted); the bytes are its payload
	shapeIPv4UDPFrag        // shapeIPv4UDP as a first fragment
	numShapes
)

func shaped(shape uint8, body []byte) []byte {
	src := int(shape >> 4)
	frame := make([]byte, 12, 14+8+40+8+len(body))
	frame[0], frame[6] = 0x02, 0x02
	switch shape & 0x0f {
	case shapeRaw:
		return body
	case shapeEthernet:
		return append(frame, body...)
	case shapeIPv4:
		return append(ipv4Prefix(frame, src, len(body), 6, false), body...)
	case shapeVLANIPv4:
		frame = append(frame, 0x81, 0x00, 0, 7)
		return append(ipv4Prefix(frame, src, len(body), 6, false), body...)
	case shapeIPv4Frag:
		return append(ipv4Prefix(frame, src, len(body), 6, true), body...)
	case shapeIPv4UDP:
		return append(ipv4Prefix(frame, src, len(body), 17, false), body...)
	case shapeIPv4UDPFrag:
		return append(ipv4Prefix(frame, src, len(body), 17, true), body...)
	case shapeIPv6, shapeQinQIPv6, shapeIPv6Frag:
		if shape&0x0f == shapeQinQIPv6 {
			frame = append(frame, 0x88, 0xa8, 0, 7, 0x81, 0x00, 0, 8)
		}
		next, payload := uint8(6), body
		if len(body) > 0 {
			next, payload = body[0], body[1:]
		}
		var frag []byte
		if shape&0x0f == shapeIPv6Frag {
			frag = []byte{next, 0, 0, 1, 0, 0, 0, 9} // offset 0, more fragments
			next = 44
		}
		frame = binary.BigEndian.AppendUint16(frame, 0x86dd)
		frame = append(frame, 0x60, 0, 0, 0)
		frame = binary.BigEndian.AppendUint16(frame, uint16(len(frag)+len(payload)))
		frame = append(frame, next, 64)
		s := netip.MustParseAddr(fuzzSrc6[src%len(fuzzSrc6)]).As16()
		frame = append(frame, s[:]...)
		frame = append(frame, netip.MustParseAddr("2001:db8::1").AsSlice()...)
		return append(append(frame, frag...), payload...)
	}
	return body // shapes past numShapes: raw too
}

func ipv4Prefix(frame []byte, src, payload int, proto uint8, firstFragment bool) []byte {
	frame = binary.BigEndian.AppendUint16(frame, 0x0800)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+payload))
	if firstFragment {
		ip[6] = 0x20
	}
	ip[8], ip[9] = 64, proto
	copy(ip[12:], netip.MustParseAddr(fuzzSrc4[src%len(fuzzSrc4)]).AsSlice())
	copy(ip[16:], netip.MustParseAddr("192.0.2.1").AsSlice())
	return append(frame, ip...)
}

// emptyTracker forgets every source's attempts, in both tiers, so that each
// frame is judged on its own.
func (d *Dataplane) emptyTracker() error {
	var key hbfAddr
	for d.objs.ScanStates.NextKey(nil, &key) == nil {
		if err := d.objs.ScanStates.Delete(key); err != nil {
			return err
		}
	}
	n := d.objs.FirstAttempts.MaxEntries()
	keys := make([]uint32, n)
	for i := range keys {
		keys[i] = uint32(i)
	}
	_, err := d.objs.FirstAttempts.BatchUpdate(keys, make([]hbfFirstAttempt, n), nil)
	return err
}
