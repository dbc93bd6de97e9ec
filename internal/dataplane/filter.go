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

// The block filter's shape, as bpf/maps.h declares it.
const (
	filterBitsShift = 23
	filterWords     = 1 << (filterBitsShift - 6)
	filterSideWord  = 2 * filterWords
	filterV4Base    = filterSideWord + 1
	filterV4Words   = 65536 / 64
	// The allow filter: IPv4 /16 bits, then the hashes of IPv6 /32s, then
	// of IPv6 /64s, in one range.
	filterAllowBase   = filterV4Base + filterV4Words
	filterAllowWords  = 3 * 65536 / 64
	filterAllowV6Bits = 65536 // the IPv6 /32 bits start past the IPv4 ones
	filterAllowV64    = 2 * 65536
)

// blockFilter is the daemon's side of block_filter (bpf/maps.h): the map's
// memory, mapped into the process, where bits are set with atomic ORs as
// the program sets them.
type blockFilter struct {
	words []uint64 // 2*filterWords words of the two sides, then the control word
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
	return uint32((x * 0x9E3779B97F4A7C15) >> (64 - filterBitsShift))
}

// add sets the address's bit on both sides. The caller holds f.mu.
func (f *blockFilter) add(a hbfAddr) {
	bit := filterBit(a)
	for side := range 2 {
		atomic.OrUint64(&f.words[side*filterWords+int(bit>>6)], 1<<(bit&63))
	}
}

// mayHold reports what the program's filter_may_hold would.
func (f *blockFilter) mayHold(a hbfAddr) bool {
	bit := filterBit(a)
	live := int(atomic.LoadUint64(&f.words[filterSideWord]) & 1)
	return atomic.LoadUint64(&f.words[live*filterWords+int(bit>>6)])>>(bit&63)&1 == 1
}

// rebuild clears the idle side, sets the bits of every address each
// yields (the exact blocks), and makes it live. The program sets the bits
// of its own insertions on both sides, so none made meanwhile is missed;
// the daemon's wait on f.mu.
func (f *blockFilter) rebuild(each func(func(*hbfAddr, *hbfRule) error) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	idle := 1 - int(atomic.LoadUint64(&f.words[filterSideWord])&1)
	side := f.words[idle*filterWords : (idle+1)*filterWords]
	for i := range side {
		atomic.StoreUint64(&side[i], 0)
	}
	stale := f.stale.Load()
	err := each(func(a *hbfAddr, _ *hbfRule) error {
		bit := filterBit(*a)
		atomic.OrUint64(&side[bit>>6], 1<<(bit&63))
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild the block filter: %w", err)
	}
	atomic.StoreUint64(&f.words[filterSideWord], uint64(idle))
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
	return int((binary.NativeEndian.Uint32(a.B[:4]) * 0x9E3779B1) >> 16)
}

func allowV64Bit(a hbfAddr) int {
	return int((binary.NativeEndian.Uint64(a.B[:8]) * 0x9E3779B97F4A7C15) >> 48)
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
