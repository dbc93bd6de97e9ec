// Package protect is the one place that says what hbf never blocks, and
// why: loopback, the host's addresses, its gateways, resolvers and NTP
// servers, the cloud metadata address it uses, the SSH client it was
// started from, --allow and the allowlist, and in a fleet the etcd
// endpoints and the members' addresses.
//
// A Set is read by everything that blocks: the kernel's allowlist (so that
// a forged scan from any of these never blocks it), and the checks on
// manual, list and fleet blocks. Building one is cheap; checking a block
// against it costs a map lookup per prefix length it holds, so that a
// million-line list is checked against thousands of members quickly.
package protect

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Kind is why an entry is protected. The kinds are in the order their
// entries win a place in the kernel's allowlist when the set is larger
// than it: the host's own, its gateways, resolvers and etcd first.
type Kind int

const (
	KindLoopback   Kind = iota
	KindHost            // an address of this host
	KindGateway         // a default gateway
	KindResolver        // a DNS resolver
	KindEtcd            // an etcd endpoint of the fleet
	KindLAPI            // the CrowdSec Local API hbf reads decisions from
	KindSSH             // the SSH client hbf was started from
	KindFlag            // --allow
	KindNTP             // a server of the host's time daemon
	KindMetadata        // the cloud's metadata service
	KindAllow           // hbf allow
	KindFleetAllow      // hbf allow --fleet
	KindMember          // an address a member of the fleet publishes
	numKinds
)

var kindNames = [numKinds]string{"loopback", "host", "gateway", "resolver", "etcd", "crowdsec", "ssh", "flag", "ntp",
	"metadata", "manual", "fleet", "member"}

// String is the kind as hbf list --allowed shows it in ORIGIN.
func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return fmt.Sprintf("kind(%d)", int(k))
	}
	return kindNames[k]
}

// Kinds are every kind, in priority order: for metrics that show each.
func Kinds() []Kind {
	out := make([]Kind, numKinds)
	for i := range out {
		out[i] = Kind(i)
	}
	return out
}

// vetoesRanges says whether a block of a range that holds an entry of the
// kind is refused. A member's entry does not: a compromised member must not
// be able to cancel range blocks by publishing addresses in them; its own
// entry in the kernel's allowlist exempts it from the range.
func (k Kind) vetoesRanges() bool { return k != KindMember }

// Entry is a prefix hbf never blocks.
type Entry struct {
	Prefix  netip.Prefix
	Kind    Kind
	Why     string    // "an etcd endpoint of the fleet", for refusals and hbf why
	Reason  string    // an allowlist entry's own reason
	By      string    // who made an allowlist entry
	Created time.Time // when an allowlist entry was made
	// Expires ends an allowlist entry; zero: never.
	Expires time.Time
}

// Set is what hbf never blocks, one entry a prefix, in the order they win
// a place in the kernel: by kind, then by address. The zero Set is empty.
type Set struct {
	entries []Entry
	index   map[netip.Prefix]int // into entries
	byAddr  []int                // entries by address, for ranges that hold some
	lengths [2][]int             // prefix lengths held, IPv4's and IPv6's, ascending
	// near marks, for each family, the /16s some entry holds or lies in:
	// a block of a /16 or narrower whose /16 is clear touches nothing,
	// which is what a list of a million addresses checks on nearly every
	// line.
	near [2]*[1 << 16 / 64]uint64
}

// top16 is the first 16 bits of a.
func top16(a netip.Addr) int {
	if a.Is4() {
		b := a.As4()
		return int(b[0])<<8 | int(b[1])
	}
	b := a.As16()
	return int(b[0])<<8 | int(b[1])
}

// mark notes that p holds or lies in the /16s it touches.
func (s *Set) mark(p netip.Prefix) {
	f := family(p.Addr())
	if s.near[f] == nil {
		s.near[f] = new([1 << 16 / 64]uint64)
	}
	first, n := top16(p.Addr()), 1
	if p.Bits() < 16 {
		n = 1 << (16 - p.Bits())
	}
	for b := first; b < first+n; b++ {
		s.near[f][b/64] |= 1 << (b % 64)
	}
}

// far reports whether p, a /16 or narrower, touches no entry.
func (s *Set) far(p netip.Prefix) bool {
	near := s.near[family(p.Addr())]
	if p.Bits() < 16 {
		return false
	}
	if near == nil {
		return true
	}
	b := top16(p.Addr())
	return near[b/64]&(1<<(b%64)) == 0
}

// NewSet builds a set of entries. A prefix given more than once keeps the
// entry of the first kind, and expires when the last of them does.
func NewSet(entries ...[]Entry) *Set {
	best := map[netip.Prefix]Entry{}
	for _, es := range entries {
		for _, e := range es {
			e.Prefix = e.Prefix.Masked()
			old, ok := best[e.Prefix]
			if !ok {
				best[e.Prefix] = e
				continue
			}
			expires := later(old.Expires, e.Expires)
			if e.Kind < old.Kind {
				old = e
			}
			old.Expires = expires
			best[e.Prefix] = old
		}
	}
	s := &Set{entries: make([]Entry, 0, len(best)), index: make(map[netip.Prefix]int, len(best))}
	for _, e := range best {
		s.entries = append(s.entries, e)
	}
	slices.SortFunc(s.entries, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
	seen := [2]map[int]bool{{}, {}}
	for i, e := range s.entries {
		s.index[e.Prefix] = i
		s.byAddr = append(s.byAddr, i)
		s.mark(e.Prefix)
		f := family(e.Prefix.Addr())
		if !seen[f][e.Prefix.Bits()] {
			seen[f][e.Prefix.Bits()] = true
			s.lengths[f] = append(s.lengths[f], e.Prefix.Bits())
		}
	}
	slices.Sort(s.lengths[0])
	slices.Sort(s.lengths[1])
	slices.SortFunc(s.byAddr, func(a, b int) int { return s.entries[a].Prefix.Addr().Compare(s.entries[b].Prefix.Addr()) })
	return s
}

// later is the later of two expiries, zero (never) being the latest.
func later(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if a.After(b) {
		return a
	}
	return b
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// Len is the number of entries.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// Protects reports whether s and o protect the same prefixes: whether
// a check against either says the same.
func (s *Set) Protects(o *Set) bool {
	prefixes := func(s *Set) []netip.Prefix {
		out := make([]netip.Prefix, 0, s.Len())
		for _, e := range s.Entries() {
			out = append(out, e.Prefix)
		}
		slices.SortFunc(out, netip.Prefix.Compare)
		return slices.Compact(out)
	}
	return slices.Equal(prefixes(s), prefixes(o))
}

// Entries are the entries, in the order they win a place in the kernel.
func (s *Set) Entries() []Entry {
	if s == nil {
		return nil
	}
	return slices.Clone(s.entries)
}

// Kernel splits the entries into those the kernel's allowlist, of capacity
// entries, holds and those it has no room for: the later kinds.
func (s *Set) Kernel(capacity int) (in, left []Entry) {
	all := s.Entries()
	if len(all) <= capacity {
		return all, nil
	}
	return all[:capacity], all[capacity:]
}

// Check refuses a block of p that would touch a protected entry: one that
// holds p, or one inside p but for a member's. The error says which, and
// why it is protected.
func (s *Set) Check(p netip.Prefix) error {
	if s == nil {
		return nil
	}
	p = p.Masked()
	if s.far(p) {
		return nil
	}
	for _, bits := range s.lengths[family(p.Addr())] {
		if bits > p.Bits() {
			break
		}
		if i, ok := s.index[netip.PrefixFrom(p.Addr(), bits).Masked()]; ok {
			return fmt.Errorf("%s is %s: never blocked", p, s.entries[i].Why)
		}
	}
	first, _ := slices.BinarySearchFunc(s.byAddr, p.Addr(), func(i int, a netip.Addr) int {
		return s.entries[i].Prefix.Addr().Compare(a)
	})
	for _, i := range s.byAddr[first:] {
		e := s.entries[i]
		if !p.Contains(e.Prefix.Addr()) {
			break
		}
		if e.Prefix.Bits() > p.Bits() && e.Kind.vetoesRanges() {
			return fmt.Errorf("%s contains %s, %s: never blocked", p, e.Prefix, e.Why)
		}
	}
	return nil
}

// Holding are the entries that hold addr.
func (s *Set) Holding(addr netip.Addr) []Entry {
	if s == nil {
		return nil
	}
	addr = addr.Unmap()
	var out []Entry
	for _, bits := range s.lengths[family(addr)] {
		if i, ok := s.index[netip.PrefixFrom(addr, bits).Masked()]; ok {
			out = append(out, s.entries[i])
		}
	}
	return out
}

// single is the entry of one address, or none for an address that is no
// one's: unspecified, or loopback (which Loopback covers whole).
func single(a netip.Addr, kind Kind, why string) []Entry {
	a = a.Unmap().WithZone("")
	if !a.IsValid() || a.IsLoopback() || a.IsUnspecified() {
		return nil
	}
	return []Entry{{Prefix: netip.PrefixFrom(a, a.BitLen()), Kind: kind, Why: why}}
}

// Addrs are the entries of addresses of one kind, for one reason.
func Addrs(addrs []netip.Addr, kind Kind, why string) []Entry {
	var out []Entry
	for _, a := range addrs {
		out = append(out, single(a, kind, why)...)
	}
	return out
}
