// Package kerneltest is the data plane without a kernel, for the tests of
// what sits above it: Fake keeps rules in memory as the program's maps do,
// and Run is the contract that Fake and the real *dataplane.Dataplane both
// keep, so the fake cannot drift from the kernel (the pattern of Cilium's
// pkg/testutils/mockmaps).
package kerneltest

import (
	"cmp"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/ports"
)

// The program's map sizes (bpf/maps.h).
const (
	ExactCapacity  = 1 << 20 // blocks4, and blocks6
	PrefixCapacity = 1 << 18 // block_prefixes
	AllowCapacity  = 1 << 14 // allow_prefixes
)

// Fake is an in-memory data plane: its rules, counters and settings. Its
// methods are safe for concurrent use.
type Fake struct {
	mu  sync.Mutex
	now func() time.Time
	// The maps' sizes; a full map refuses new keys, as the kernel's does.
	exactCap, prefixCap, allowCap int

	// Blocks of single addresses, a map a family, and of wider prefixes,
	// as the program keeps them in maps of their own sizes.
	exact4, exact6, prefixes map[netip.Prefix]dataplane.Rule
	allows                   map[netip.Prefix]dataplane.Rule
	refuse                   func(op string, p netip.Prefix) error

	counters   dataplane.Counters
	settings   dataplane.Settings
	limitStats map[ports.Port]dataplane.LimitStats
	onLink     []netip.Prefix
	local      []netip.Addr
	served     []ports.Port
	watchHot   bool
	hot        []dataplane.Hot
}

// NewFake returns an empty data plane whose clock is now (time.Now when
// nil), with the program's map sizes.
func NewFake(now func() time.Time) *Fake {
	if now == nil {
		now = time.Now
	}
	return &Fake{now: now, exactCap: ExactCapacity, prefixCap: PrefixCapacity, allowCap: AllowCapacity,
		exact4: map[netip.Prefix]dataplane.Rule{}, exact6: map[netip.Prefix]dataplane.Rule{},
		prefixes: map[netip.Prefix]dataplane.Rule{},
		allows:   map[netip.Prefix]dataplane.Rule{}}
}

// Capacity is the block maps' sizes.
func (f *Fake) Capacity() dataplane.Capacity {
	f.mu.Lock()
	defer f.mu.Unlock()
	return dataplane.Capacity{Blocks: f.exactCap, BlockPrefixes: f.prefixCap, Allows: f.allowCap}
}

// WithCapacity sizes the exact-address block maps (tests fill them).
func (f *Fake) WithCapacity(exact int) *Fake {
	f.exactCap = exact
	return f
}

// WithAllowCapacity sizes the allowlist (tests fill it).
func (f *Fake) WithAllowCapacity(n int) *Fake {
	f.allowCap = n
	return f
}

// Refuse makes every write the data plane would do fail with what fn
// returns for it (nil lets it through); op is the method's name ("Block",
// "BlockMany", "Extend", "Unblock", "UnblockMany", "Allow", "Disallow").
// Refuse(nil) ends it.
func (f *Fake) Refuse(fn func(op string, p netip.Prefix) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuse = fn
}

func (f *Fake) refused(op string, p netip.Prefix) error {
	if f.refuse == nil {
		return nil
	}
	return f.refuse(op, p)
}

// key checks p as the program's key does: IPv4-mapped prefixes are IPv4's.
func key(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, fmt.Errorf("invalid prefix %v", p)
	}
	if p.Masked() != p {
		return p, fmt.Errorf("prefix %v has host bits set", p)
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96), nil
	}
	return p, nil
}

// blocksOf is the map that holds p's block, with its size and its name.
func (f *Fake) blocksOf(p netip.Prefix) (map[netip.Prefix]dataplane.Rule, int, string) {
	switch {
	case p.Bits() != p.Addr().BitLen():
		return f.prefixes, f.prefixCap, "prefixes"
	case p.Addr().Is4():
		return f.exact4, f.exactCap, "exact4"
	}
	return f.exact6, f.exactCap, "exact6"
}

// blockMaps are the maps of blocks.
func (f *Fake) blockMaps() []map[netip.Prefix]dataplane.Rule {
	return []map[netip.Prefix]dataplane.Rule{f.exact4, f.exact6, f.prefixes}
}

// room reports whether p fits, with extra new keys of its map on the way.
func (f *Fake) room(p netip.Prefix, extra int) bool {
	m, size, _ := f.blocksOf(p)
	if _, ok := m[p]; ok {
		return true // the kernel replaces an entry in place
	}
	return len(m)+extra < size
}

func (f *Fake) rule(p netip.Prefix, expires time.Time, origin dataplane.Origin) dataplane.Rule {
	return dataplane.Rule{Prefix: p, Created: f.now(), Expires: expires, Origin: origin}
}

// Block makes the data plane drop p until expires (zero: never), replacing
// an entry for p.
func (f *Fake) Block(p netip.Prefix, expires time.Time) error {
	p, err := key(p)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refused("Block", p); err != nil {
		return fmt.Errorf("block %v: %w", p, err)
	}
	if !f.room(p, 0) {
		return fmt.Errorf("block %v: %w", p, unix.E2BIG)
	}
	m, _, _ := f.blocksOf(p)
	m[p] = f.rule(p, expires, dataplane.OriginOperator)
	return nil
}

// BlockMany blocks every prefix until its expiry, all or nothing: on a
// refusal no entry it wrote stays, not even one it replaced.
func (f *Fake) BlockMany(entries iter.Seq2[netip.Prefix, time.Time]) (int, error) {
	// Read before the lock: the caller's iterator may look into the data
	// plane, as the kernel lets it.
	var keys []netip.Prefix
	expiry := map[netip.Prefix]time.Time{}
	var keyErr error
	for p, expires := range entries {
		if p, keyErr = key(p); keyErr != nil {
			break // the kernel writes what came before, then undoes it
		}
		keys = append(keys, p)
		expiry[p] = expires
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	written := map[netip.Prefix]bool{}
	added := map[string]int{} // new keys, by their map
	n := 0
	var err error
	for _, p := range keys {
		if err = f.refused("BlockMany", p); err != nil {
			break
		}
		m, _, name := f.blocksOf(p)
		if _, had := m[p]; !had && !written[p] {
			if !f.room(p, added[name]) {
				err = unix.E2BIG
				break
			}
			added[name]++
		}
		written[p] = true
		n++
	}
	if err == nil {
		err = keyErr
	}
	for p := range written {
		m, _, _ := f.blocksOf(p)
		if err != nil {
			delete(m, p)
		} else {
			m[p] = f.rule(p, expiry[p], dataplane.OriginOperator)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("bulk block after %d entries: %w (nothing of it was kept)", n, err)
	}
	return n, nil
}

// Extend gives the block of exactly p a new expiry, keeping the rest.
func (f *Fake) Extend(p netip.Prefix, expires time.Time) error {
	p, err := key(p)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refused("Extend", p); err != nil {
		return fmt.Errorf("extend %v: %w", p, err)
	}
	m, _, _ := f.blocksOf(p)
	r, ok := m[p]
	if !ok {
		return fmt.Errorf("extend %v: %w", p, ebpf.ErrKeyNotExist)
	}
	r.Expires = expires
	m[p] = r
	return nil
}

// Unblock removes the block of exactly p; false when there was none.
func (f *Fake) Unblock(p netip.Prefix) (bool, error) {
	p, err := key(p)
	if err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refused("Unblock", p); err != nil {
		return false, fmt.Errorf("unblock %v: %w", p, err)
	}
	m, _, _ := f.blocksOf(p)
	_, ok := m[p]
	delete(m, p)
	return ok, nil
}

// UnblockMany removes the blocks of exactly these prefixes, skipping absent
// ones, and returns how many it removed.
func (f *Fake) UnblockMany(prefixes iter.Seq[netip.Prefix]) (int, error) {
	all := slices.Collect(prefixes) // before the lock, as in BlockMany
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	var errs []error
	for _, p := range all {
		p, err := key(p)
		if err == nil {
			err = f.refused("UnblockMany", p)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m, _, _ := f.blocksOf(p)
		if _, ok := m[p]; ok {
			delete(m, p)
			n++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("bulk unblock: %w", err)
	}
	return n, nil
}

// LookupBlock returns the block entry of exactly p.
func (f *Fake) LookupBlock(p netip.Prefix) (dataplane.Rule, bool, error) {
	p, err := key(p)
	if err != nil {
		return dataplane.Rule{}, false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, _, _ := f.blocksOf(p)
	r, ok := m[p]
	return r, ok, nil
}

func sorted(m map[netip.Prefix]dataplane.Rule) []dataplane.Rule {
	return slices.SortedFunc(maps.Values(m), func(a, b dataplane.Rule) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
}

// EachBlock calls fn with every block entry, expired ones included.
func (f *Fake) EachBlock(fn func(dataplane.Rule) error) error {
	for _, r := range f.Blocks() {
		if err := fn(r); err != nil {
			return fmt.Errorf("read blocks: %w", err)
		}
	}
	return nil
}

// Blocks lists every block entry, expired ones included.
func (f *Fake) Blocks() []dataplane.Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Concat(sorted(f.exact4), sorted(f.exact6), sorted(f.prefixes))
}

// SweepRules deletes the expired rules.
func (f *Fake) SweepRules() (dataplane.SweepStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	var st dataplane.SweepStats
	for _, m := range f.blockMaps() {
		for p, r := range m {
			if r.Expired(now) {
				delete(m, p)
				st.Blocks++
			}
		}
	}
	for p, r := range f.allows {
		if r.Expired(now) {
			delete(f.allows, p)
			st.Allows++
		}
	}
	return st, nil
}

// SweepTrackers has nothing to sweep: the fake tracks no scans.
func (f *Fake) SweepTrackers(time.Duration) (int, error) { return 0, nil }

// Allow puts p on the allowlist until expires (zero: never).
func (f *Fake) Allow(p netip.Prefix, expires time.Time) error {
	p, err := key(p)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refused("Allow", p); err != nil {
		return fmt.Errorf("allow %v: %w", p, err)
	}
	if _, ok := f.allows[p]; !ok && len(f.allows) >= f.allowCap {
		return fmt.Errorf("allow %v: %w", p, unix.E2BIG)
	}
	f.allows[p] = f.rule(p, expires, dataplane.OriginOperator)
	return nil
}

// Disallow removes p from the allowlist; false when it was not there.
func (f *Fake) Disallow(p netip.Prefix) (bool, error) {
	p, err := key(p)
	if err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refused("Disallow", p); err != nil {
		return false, fmt.Errorf("disallow %v: %w", p, err)
	}
	_, ok := f.allows[p]
	delete(f.allows, p)
	return ok, nil
}

// Allows lists the allowlist.
func (f *Fake) Allows() ([]dataplane.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sorted(f.allows), nil
}

// AllowPrefixes lists the allowlist's prefixes, sorted.
func (f *Fake) AllowPrefixes() []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]netip.Prefix, 0, len(f.allows))
	for _, r := range sorted(f.allows) {
		out = append(out, r.Prefix)
	}
	return out
}

// BlockedSources counts the live block entries.
func (f *Fake) BlockedSources() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now, n := f.now(), 0
	for _, m := range f.blockMaps() {
		for _, r := range m {
			if !r.Expired(now) {
				n++
			}
		}
	}
	return n, nil
}

var _ dataplane.Rules = (*Fake)(nil)
