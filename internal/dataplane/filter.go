package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The block filter's shape: bpf/maps.h's enum filter_layout, which
// bpf2go carries here.
const (
	filterBitsShift = int(hbfFilterLayoutFILTER_BITS_SHIFT)
	filterWords     = int(hbfFilterLayoutFILTER_WORDS)    // a side, in pairs with the other's
	filterLive      = 1 << hbfFilterLayoutFILTER_LIVE_BIT // in a word of a live side
	filterV4Base    = int(hbfFilterLayoutFILTER_V4BASE)
	filterV4Words   = int(hbfFilterLayoutFILTER_V4WORDS)
	// The allow filter: IPv4 /16 bits, then the hashes of IPv6 /32s, then
	// of IPv6 /64s, in one range.
	filterAllowBase   = int(hbfFilterLayoutFILTER_ALLOW_V4BASE)
	filterAllowWords  = filterV4Words + int(hbfFilterLayoutFILTER_ALLOW_V6WORDS)
	filterAllowV6Bits = 64 * filterV4Words                                                   // the IPv6 /32 bits start past the IPv4 ones
	filterAllowV64    = filterAllowV6Bits + 64*int(hbfFilterLayoutFILTER_ALLOW_V6HASH_WORDS) // then the /64 ones
)

// The filter hashes' multipliers, FILTER_HASH64 and FILTER_HASH32 of
// bpf/maps.h: too wide for the enum, held to the program's by
// TestFilterHashesAreTheProgramsOwn.
const (
	filterHash64 = 0x9E3779B97F4A7C15
	filterHash32 = 0x9E3779B1
)

// blockFilter is the daemon's side of block_filter (bpf/maps.h): the map's
// memory, mapped into the process, where bits are set with atomic ORs as
// the program sets them.
type blockFilter struct {
	words []uint64 // the two sides' 2*filterWords words, in pairs, then the prefix bits
	mem   []byte
	// mu serialises rebuilds with the daemon's insertions: an entry the
	// daemon adds while the idle side is rebuilt must not be missed.
	mu sync.Mutex
	// stale counts entries removed since the last rebuild: their bits
	// still send lookups to the map.
	stale atomic.Int64
}

func openFilter(m *ebpf.Map) (*blockFilter, error) {
	size := int(m.MaxEntries()) * int(m.ValueSize())
	mem, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the block filter: %w", err)
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), size/8)
	return &blockFilter{words: words, mem: mem}, nil
}

func (f *blockFilter) close() error {
	if f == nil || f.mem == nil {
		return nil
	}
	err := unix.Munmap(f.mem)
	f.mem, f.words = nil, nil
	return err
}

// filterBit is an address's bit on either side: filter_bit() of
// bpf/lpm.h, on the address's two words as the program loads them.
func filterBit(a hbfAddr) uint32 {
	x := binary.NativeEndian.Uint64(a.B[:8]) ^ binary.NativeEndian.Uint64(a.B[8:])
	return uint32((x * filterHash64) >> (64 - filterBitsShift))
}

// filterMask is a bit's mask in its word, as filter_mask() computes it:
// bit 63 is the live bit, and bit 62 stands in for it.
func filterMask(bit uint32) uint64 {
	return 1 << min(bit&63, 62)
}

// pair is the index of the side-0 word of bit's pair; side 1's follows.
func pair(bit uint32) int { return 2 * int(bit>>6) }

// add sets the address's bit on both sides. The caller holds f.mu.
func (f *blockFilter) add(a hbfAddr) {
	bit := filterBit(a)
	for side := range 2 {
		atomic.OrUint64(&f.words[pair(bit)+side], filterMask(bit))
	}
}

// mayHold reports what the program's filter_may_hold would.
func (f *blockFilter) mayHold(a hbfAddr) bool {
	bit := filterBit(a)
	w0, w1 := atomic.LoadUint64(&f.words[pair(bit)]), atomic.LoadUint64(&f.words[pair(bit)+1])
	if (w0|w1)&filterLive == 0 {
		return true
	}
	m := filterMask(bit)
	return w0&filterLive != 0 && w0&m != 0 || w1&filterLive != 0 && w1&m != 0
}

// liveSide is the side the first pair says is live; side 0 when it says
// neither or both (a filter never built, or a rebuild cut short).
func (f *blockFilter) liveSide() int {
	if atomic.LoadUint64(&f.words[0])&filterLive == 0 && atomic.LoadUint64(&f.words[1])&filterLive != 0 {
		return 1
	}
	return 0
}

// rebuild clears the idle side, sets the bits of every address each
// yields (the exact blocks), makes it live word by word, then retires the
// other side. The program sets the bits of its own insertions on both
// sides, so none made meanwhile is missed; the daemon's wait on f.mu. A
// pair is without a live word only if a rebuild stopped half-way, and
// such a pair sends every lookup on to the maps.
func (f *blockFilter) rebuild(each func(func(*hbfAddr, *hbfRule) error) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	idle := 1 - f.liveSide()
	for i := idle; i < 2*filterWords; i += 2 {
		atomic.StoreUint64(&f.words[i], 0)
	}
	stale := f.stale.Load()
	err := each(func(a *hbfAddr, _ *hbfRule) error {
		bit := filterBit(*a)
		atomic.OrUint64(&f.words[pair(bit)+idle], filterMask(bit))
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild the block filter: %w", err)
	}
	for i := idle; i < 2*filterWords; i += 2 {
		atomic.OrUint64(&f.words[i], filterLive)
	}
	for i := 1 - idle; i < 2*filterWords; i += 2 {
		atomic.AndUint64(&f.words[i], ^uint64(filterLive))
	}
	f.stale.Add(-stale)
	return nil
}

// removed notes n entries gone from blocks.
func (f *blockFilter) removed(n int) { f.stale.Add(int64(n)) }

// needsRebuild reports whether enough entries went since the last rebuild
// for their bits to cost lookups worth a rebuild: a quarter of those in
// force, and at least 4096.
func (f *blockFilter) needsRebuild(inForce int) bool {
	return f.stale.Load() > int64(max(inForce/4, 4096))
}

// mappedSpace is where IPv4 addresses live in the program's keys.
var mappedSpace = netip.MustParsePrefix("::ffff:0:0/96")

// v4Span is the range of IPv4 /16s a prefix block's key may hold: all of
// them for an IPv6 prefix that holds the IPv4-mapped space, none for one
// outside it.
func v4Span(k hbfLpmKey) (lo, hi int, ok bool) {
	p := netip.PrefixFrom(netip.AddrFrom16(k.Addr.B), int(k.Prefixlen)).Masked()
	if p.Bits() <= mappedSpace.Bits() {
		if p.Contains(mappedSpace.Addr()) {
			return 0, 0xffff, true
		}
		return 0, 0, false
	}
	if !p.Addr().Is4In6() {
		return 0, 0, false
	}
	a := p.Addr().Unmap().As4()
	s16 := int(a[0])<<8 | int(a[1])
	if bits := p.Bits() - 96; bits < 16 {
		span := 1<<(16-bits) - 1
		return s16 &^ span, s16 | span, true
	}
	return s16, s16, true
}

// eachV4Bit calls set with each /16 of v4Span.
func eachV4Bit(k hbfLpmKey, set func(s16 int)) {
	lo, hi, ok := v4Span(k)
	for s16 := lo; ok && s16 <= hi; s16++ {
		set(s16)
	}
}

// addV4 sets the /16 bits of a prefix block's key, before the key goes
// into block_prefixes. The caller holds the Dataplane's prefixMu.
func (f *blockFilter) addV4(k hbfLpmKey) {
	eachV4Bit(k, func(s16 int) { atomic.OrUint64(&f.words[filterV4Base+s16>>6], 1<<(s16&63)) })
}

// rebuildV4 rewrites the /16 bits from the prefixes block_prefixes holds,
// after removals. The caller holds the Dataplane's prefixMu; the program
// writes IPv6 prefixes only.
func (f *blockFilter) rebuildV4(prefixes *ebpf.Map) error {
	if err := f.rewrite(prefixes, filterV4Base, filterV4Words, eachV4Bit); err != nil {
		return fmt.Errorf("rebuild the IPv4 prefix filter: %w", err)
	}
	return nil
}

// rewrite sets n words from base to the bits that mark gives the keys of
// prefixes, each word stored whole: a prefix in force throughout has its
// bit in the old word and in the new one.
func (f *blockFilter) rewrite(prefixes *ebpf.Map, base, n int, mark func(hbfLpmKey, func(bit int))) error {
	bits := make([]uint64, n)
	var key hbfLpmKey
	var rule hbfRule
	it := prefixes.Iterate()
	for it.Next(&key, &rule) {
		mark(key, func(bit int) { bits[bit>>6] |= 1 << (bit & 63) })
	}
	if err := it.Err(); err != nil {
		return err
	}
	for i, w := range bits {
		atomic.StoreUint64(&f.words[base+i], w)
	}
	return nil
}

// allowV6Bit and allowV64Bit are an IPv6 address's bits in the allow
// filter, as allow_may_hold() of bpf/lpm.h computes them: hashes of its
// first 32 and 64 bits, as the program loads them.
func allowV6Bit(a hbfAddr) int {
	return int((binary.NativeEndian.Uint32(a.B[:4]) * filterHash32) >> 16)
}

func allowV64Bit(a hbfAddr) int {
	return int((binary.NativeEndian.Uint64(a.B[:8]) * filterHash64) >> 48)
}

// eachAllowBit calls set with every bit of the allow filter (counted from
// filterAllowBase) that addresses of an allow prefix's key may look up:
// a prefix of /64 or longer sets its /64's bit, a shorter one its /32's,
// and one shorter than /32 spans every /32 hash.
func eachAllowBit(k hbfLpmKey, set func(bit int)) {
	eachV4Bit(k, set)
	switch {
	case k.Prefixlen < 32:
		for b := range filterAllowV6Bits {
			set(filterAllowV6Bits + b)
		}
	case k.Prefixlen < 64:
		set(filterAllowV6Bits + allowV6Bit(k.Addr))
	default:
		set(filterAllowV64 + allowV64Bit(k.Addr))
	}
}

// addAllow sets the bits of an allow prefix's key, before the key goes
// into allow_prefixes. The caller holds the Dataplane's allowMu.
func (f *blockFilter) addAllow(k hbfLpmKey) {
	eachAllowBit(k, func(bit int) {
		atomic.OrUint64(&f.words[filterAllowBase+bit>>6], 1<<(bit&63))
	})
}

// rebuildAllow rewrites the allow bits from the prefixes allow_prefixes
// holds, after removals. The caller holds the Dataplane's allowMu.
func (f *blockFilter) rebuildAllow(allows *ebpf.Map) error {
	if err := f.rewrite(allows, filterAllowBase, filterAllowWords, eachAllowBit); err != nil {
		return fmt.Errorf("rebuild the allowlist filter: %w", err)
	}
	return nil
}
