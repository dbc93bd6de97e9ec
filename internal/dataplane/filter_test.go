package dataplane

import (
	"fmt"
	"iter"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// Whatever path puts an address into blocks — Block, BlockMany, the
// program's own scan block, a migration — its packets are dropped: the
// filter in front of the map never hides an entry. A rebuild after
// removals clears their bits and keeps the rest.
func TestBlockFilterNeverHidesABlock(t *testing.T) { forEachHook(t, testBlockFilterNeverHidesABlock) }

func testBlockFilterNeverHidesABlock(t *testing.T, h Hook) {
	d := newTestDPWith(t, defaults, Options{firstAttemptSlots: testFirstAttemptSlots, Hook: h})
	// Both families: their exact blocks are in two maps behind one filter.
	addr := func(i int) netip.Addr {
		if i%3 == 0 {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 9, 15: byte(i), 14: byte(i >> 8)})
		}
		return netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
	}
	ack := func(a netip.Addr) frame {
		dst := "203.0.113.5"
		if a.Is6() {
			dst = "2001:db8::5"
		}
		return tcpSYN(a.String(), dst, 40000, 443).with(func(f *frame) { f.flags = ack })
	}
	if err := d.Block(netip.PrefixFrom(addr(0), 128), noExpiry); err != nil {
		t.Fatal(err)
	}
	many := func(yield func(netip.Prefix) bool) {
		for i := 1; i < 5000; i++ {
			if !yield(netip.PrefixFrom(addr(i), addr(i).BitLen())) {
				return
			}
		}
	}
	if _, err := d.BlockMany(Until(many, noExpiry)); err != nil {
		t.Fatal(err)
	}
	scanner := "198.51.100.99" // blocked by the program, as an exact address
	for port := uint16(1); port <= 4; port++ {
		d.run(tcpSYN(scanner, "203.0.113.5", 40000, port))
	}
	for i := range 5000 {
		expectVerdict(t, d.run(ack(addr(i))), xdpDrop, fmt.Sprintf("blocked %v", addr(i)))
	}
	expectVerdict(t, d.run(ack(netip.MustParseAddr(scanner))), xdpDrop, "the scanner the program blocked")

	// Half unblocked, then a rebuild: the rest stays blocked, the removed
	// pass, and the filter forgets most of them.
	gone := func(yield func(netip.Prefix) bool) {
		for i := 0; i < 5000; i += 2 {
			if !yield(netip.PrefixFrom(addr(i), addr(i).BitLen())) {
				return
			}
		}
	}
	if _, err := d.UnblockMany(iter.Seq[netip.Prefix](gone)); err != nil {
		t.Fatal(err)
	}
	if err := d.rebuildFilter(); err != nil {
		t.Fatal(err)
	}
	stillSet := 0
	for i := range 5000 {
		want := uint32(xdpDrop)
		if i%2 == 0 {
			want = xdpPass
			if d.filter.mayHold(hbfAddr{B: addr(i).As16()}) {
				stillSet++
			}
		}
		expectVerdict(t, d.run(ack(addr(i))), want, fmt.Sprintf("%v after the rebuild", addr(i)))
	}
	// 2,501 addresses in 2^23 bits: a collision or two at most.
	if stillSet > 10 {
		t.Errorf("%d of 2,500 removed addresses still pass the filter after a rebuild", stillSet)
	}
	expectVerdict(t, d.run(ack(netip.MustParseAddr(scanner))), xdpDrop, "the scanner after the rebuild")
}

// IPv4 prefix blocks mark their /16s: a source under one is looked up in
// the trie and dropped, one outside is not; an IPv6 prefix that holds the
// IPv4-mapped space marks them all; removals clear their marks.
func TestIPv4PrefixFilter(t *testing.T) { forEachHook(t, testIPv4PrefixFilter) }

func testIPv4PrefixFilter(t *testing.T, h Hook) {
	d := newTestDPWith(t, defaults, Options{firstAttemptSlots: testFirstAttemptSlots, Hook: h})
	ack := func(src string) frame {
		return tcpSYN(src, "203.0.113.5", 40000, 443).with(func(f *frame) { f.flags = ack })
	}
	d.mustBlock("100.64.0.0/15", noExpiry)
	many := func(yield func(netip.Prefix) bool) {
		yield(mustPrefix("198.18.7.0/24"))
	}
	if _, err := d.BlockMany(Until(many, noExpiry)); err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]uint32{
		"100.64.1.1": xdpDrop, "100.65.255.9": xdpDrop, "100.66.0.1": xdpPass,
		"198.18.7.200": xdpDrop, "198.18.8.1": xdpPass, "::ffff:100.65.0.1": xdpDrop,
	} {
		expectVerdict(t, d.run(ack(src)), want, src)
	}
	d.mustBlock("::/8", noExpiry) // holds ::ffff:0:0/96: every IPv4 address
	expectVerdict(t, d.run(ack("192.0.2.77")), xdpDrop, "IPv4 under an IPv6 prefix of the mapped space")
	for _, p := range []string{"::/8", "100.64.0.0/15"} {
		if ok, err := d.Unblock(mustPrefix(p)); !ok || err != nil {
			t.Fatalf("unblock %s: %v %v", p, ok, err)
		}
	}
	expectVerdict(t, d.run(ack("192.0.2.77")), xdpPass, "after the IPv6 prefix went")
	expectVerdict(t, d.run(ack("100.65.255.9")), xdpPass, "after the /15 went")
	expectVerdict(t, d.run(ack("198.18.7.200")), xdpDrop, "the /24 that stays")
	var k hbfLpmKey
	k.Addr.B = netip.MustParseAddr("::ffff:100.65.0.0").As16()
	if lo, _, _ := v4Span(hbfLpmKey{Prefixlen: 96 + 15, Addr: k.Addr}); d.filter.words[filterV4Base+lo>>6]>>(lo&63)&1 != 0 {
		t.Error("the removed /15's /16 is still marked")
	}
}

// Allow prefixes mark their bits in the allow filter: a blocked source
// under one passes whatever the prefix's shape (an IPv4 /8 spans /16s, an
// IPv6 prefix shorter than 32 bits every hash), one outside is dropped,
// and a disallowed prefix stops overriding once its bits are rebuilt.
func TestAllowFilterNeverHidesAnAllow(t *testing.T) { forEachHook(t, testAllowFilterNeverHidesAnAllow) }

func testAllowFilterNeverHidesAnAllow(t *testing.T, h Hook) {
	d := newTestDPWith(t, defaults, Options{firstAttemptSlots: testFirstAttemptSlots, Hook: h})
	ack := func(src string) frame {
		dst := "203.0.113.5"
		if netip.MustParseAddr(src).Is6() && !netip.MustParseAddr(src).Is4In6() {
			dst = "2001:db8::1"
		}
		return tcpSYN(src, dst, 40000, 443).with(func(f *frame) { f.flags = ack })
	}
	d.mustBlock("0.0.0.0/0", noExpiry)
	d.mustBlock("2000::/3", noExpiry)
	for _, p := range []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8:aa::/48", "2001:db8:bb::9/128", "3000::/16",
		"2001:db8:cc:1::/64", "2001:db8:dd::/63", "3fff:1::9/128"} {
		d.mustAllow(p)
	}
	verdicts := map[string]uint32{
		"10.0.0.1": xdpPass, "10.255.255.254": xdpPass, "192.0.2.7": xdpPass,
		"2001:db8:aa:1::5": xdpPass, "2001:db8:bb::9": xdpPass, "3000:ffff::1": xdpPass,
		"2001:db8:cc:1::77": xdpPass, "2001:db8:dd:1::1": xdpPass, "3fff:1::9": xdpPass,
		"11.0.0.1": xdpDrop, "192.0.2.8": xdpDrop, "2001:db8:cc::1": xdpDrop, "3001::1": xdpDrop,
		"2001:db8:dd:2::1": xdpDrop, "3fff:1:0:1::9": xdpDrop,
	}
	for src, want := range verdicts {
		expectVerdict(t, d.run(ack(src)), want, src)
	}
	for _, p := range []string{"10.0.0.0/8", "3000::/16"} {
		if ok, err := d.Disallow(mustPrefix(p)); !ok || err != nil {
			t.Fatalf("disallow %s: %v %v", p, ok, err)
		}
	}
	verdicts["10.0.0.1"], verdicts["10.255.255.254"], verdicts["3000:ffff::1"] = xdpDrop, xdpDrop, xdpDrop
	for src, want := range verdicts {
		expectVerdict(t, d.run(ack(src)), want, src+" after the disallows")
	}
	// An allow of /64 or longer marks its /64 alone: the rest of its /32
	// skips the trie.
	bit := func(b int) bool { return d.filter.words[filterAllowBase+b>>6]>>(b&63)&1 == 1 }
	if a := (hbfAddr{B: mustPrefix("3fff:1::/32").Addr().As16()}); bit(filterAllowV6Bits + allowV6Bit(a)) {
		t.Error("a /128 allow marked its /32")
	}
	if a := (hbfAddr{B: mustPrefix("2001:db8:cc:1::/64").Addr().As16()}); !bit(filterAllowV64 + allowV64Bit(a)) {
		t.Error("the /64 allow did not mark its /64")
	}
	// The /8's /16s are clear again: their blocked sources skip the trie.
	if w := d.filter.words[filterAllowBase+10<<8>>6]; w != 0 {
		t.Errorf("the disallowed /8's /16s are still marked: %#x", w)
	}
}

// The two sides trade places word by word: after a rebuild one side is
// live and holds exactly the entries then, bits added since count, and a
// pair whose live bits a rebuild cut short never hides an entry.
func TestBlockFilterSides(t *testing.T) {
	f := &blockFilter{words: make([]uint64, filterV4Base)}
	addr := func(s string) hbfAddr { return hbfAddr{B: netip.MustParseAddr(s).As16()} }
	kept, gone := addr("192.0.2.7"), addr("2001:db8::9")
	if filterBit(kept)>>6 == filterBit(gone)>>6 {
		t.Fatal("the test's addresses share a word")
	}
	if !f.mayHold(gone) {
		t.Error("a filter never built hides an address")
	}
	entries := []hbfAddr{kept}
	each := func(fn func(*hbfAddr, *hbfRule) error) error {
		for i := range entries {
			if err := fn(&entries[i], &hbfRule{}); err != nil {
				return err
			}
		}
		return nil
	}
	for round, wantSide := range []int{1, 0} {
		f.add(gone)
		if !f.mayHold(gone) {
			t.Errorf("round %d: an added address is hidden", round)
		}
		if err := f.rebuild(each); err != nil {
			t.Fatal(err)
		}
		if side := f.liveSide(); side != wantSide {
			t.Errorf("round %d: side %d live after the rebuild, want %d", round, side, wantSide)
		}
		if !f.mayHold(kept) || f.mayHold(gone) {
			t.Errorf("round %d: after the rebuild, holds %v: %v, %v: %v", round, kept, f.mayHold(kept), gone, f.mayHold(gone))
		}
	}
	for i := range 2 * filterWords {
		f.words[i] &^= filterLive // as if a rebuild stopped between its two passes and the next
	}
	if !f.mayHold(gone) {
		t.Error("a pair with no live word hides an address")
	}
}

// The hashes' multipliers are too wide for the enum that carries the
// filter's shape: the daemon's copies must be the ones the compiled
// program multiplies by, or it sets bits the program never reads.
func TestFilterHashesAreTheProgramsOwn(t *testing.T) {
	spec, err := loadHbf()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{hbfProgHbfXdp, hbfProgHbfTc} {
		var wide, narrow bool
		for _, ins := range spec.Programs[name].Instructions {
			switch {
			case ins.OpCode.IsDWordLoad() && uint64(ins.Constant) == filterHash64:
				wide = true
			case ins.OpCode.ALUOp() == asm.Mul && ins.OpCode.Source() == asm.ImmSource && uint32(ins.Constant) == filterHash32:
				narrow = true
			}
		}
		if !wide || !narrow {
			t.Errorf("%s: multiplies by %#x: %v, by %#x: %v; filter.go's multipliers are not the program's",
				name, uint64(filterHash64), wide, uint32(filterHash32), narrow)
		}
	}
}
