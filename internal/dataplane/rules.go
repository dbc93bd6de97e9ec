package dataplane

import (
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// Origin says who wrote a rule.
type Origin uint8

const (
	// OriginOperator: written through the daemon (flags, files, CLI).
	OriginOperator = Origin(hbfRuleOriginORIGIN_OPERATOR)
	// OriginScan: written by the XDP program for a source that scanned.
	OriginScan = Origin(hbfRuleOriginORIGIN_SCAN)
	// OriginLimit: written by the connection tracer for a source over a
	// connection limit.
	OriginLimit = Origin(hbfRuleOriginORIGIN_LIMIT)
)

func (o Origin) String() string {
	switch o {
	case OriginScan:
		return "scan"
	case OriginLimit:
		return "limit"
	}
	return "operator"
}

// Rules are the program's block and allow entries as the daemon uses them.
// *Dataplane implements it; so does kerneltest.Fake, and kerneltest.Run
// holds both to the same behaviour.
type Rules interface {
	Block(p netip.Prefix, expires time.Time) error
	BlockMany(entries iter.Seq2[netip.Prefix, time.Time]) (int, error)
	Extend(p netip.Prefix, expires time.Time) error
	Unblock(p netip.Prefix) (bool, error)
	UnblockMany(prefixes iter.Seq[netip.Prefix]) (int, error)
	LookupBlock(p netip.Prefix) (Rule, bool, error)
	EachBlock(fn func(Rule) error) error
	SweepRules() (SweepStats, error)
	SweepTrackers(window time.Duration) (int, error)
	Allow(p netip.Prefix, expires time.Time) error
	Disallow(p netip.Prefix) (bool, error)
	Allows() ([]Rule, error)
	Capacity() Capacity
}

var _ Rules = (*Dataplane)(nil)

// Rule is one block or allow entry as the kernel holds it.
type Rule struct {
	Prefix  netip.Prefix
	Created time.Time
	Expires time.Time // zero: never
	Packets uint64    // dropped by this block
	Origin  Origin
}

// Expired reports whether the rule no longer applies at now.
func (r Rule) Expired(now time.Time) bool {
	return !r.Expires.IsZero() && !now.Before(r.Expires)
}

// key16 returns the 16-byte form the program uses: IPv4 as IPv4-mapped IPv6,
// with the prefix length counted in those 128 bits.
func key16(p netip.Prefix) (hbfAddr, uint32, error) {
	if !p.IsValid() {
		return hbfAddr{}, 0, fmt.Errorf("invalid prefix %v", p)
	}
	if p.Masked() != p {
		return hbfAddr{}, 0, fmt.Errorf("prefix %v has host bits set", p)
	}
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return hbfAddr{B: p.Addr().As16()}, uint32(bits), nil
}

// prefixOf is the inverse of key16: mapped addresses come back as IPv4.
func prefixOf(a hbfAddr, bits uint32) netip.Prefix {
	addr := netip.AddrFrom16(a.B)
	if addr.Is4In6() && bits >= 96 {
		return netip.PrefixFrom(addr.Unmap(), int(bits-96))
	}
	return netip.PrefixFrom(addr, int(bits))
}

func (d *Dataplane) newRule(bits uint32, expires time.Time, origin Origin) hbfRule {
	ref := d.clock.ref()
	return hbfRule{
		ExpiresNs: ref.toMono(expires),
		CreatedNs: ref.mono,
		Prefixlen: uint8(bits),
		Origin:    uint8(origin),
	}
}

// Block makes the program drop every packet from prefix until expires (the
// zero time: never). A single address goes to the exact-match map, a wider
// prefix to the LPM trie. An existing entry for the prefix is replaced.
func (d *Dataplane) Block(p netip.Prefix, expires time.Time) error {
	addr, bits, err := key16(p)
	if err != nil {
		return err
	}
	rule := d.newRule(bits, expires, OriginOperator)
	if bits == 128 {
		d.filter.mu.Lock()
		d.filter.add(addr) // the bit before the entry: see block_filter
		m, k := d.exactEntry(addr)
		err = m.Update(k, rule, ebpf.UpdateAny)
		d.filter.mu.Unlock()
	} else {
		d.prefixMu.Lock()
		defer d.prefixMu.Unlock()
		// The hint first: the program must never skip a map holding a block.
		if err := d.setPrefixHint(true); err != nil {
			return err
		}
		k := hbfLpmKey{Prefixlen: bits, Addr: addr}
		d.filter.addV4(k)
		err = d.objs.BlockPrefixes.Update(k, rule, ebpf.UpdateAny)
		if err != nil {
			err = errors.Join(err, d.updatePrefixHintLocked())
		}
	}
	if err != nil {
		return fmt.Errorf("block %v: %w", p, err)
	}
	return nil
}

func (d *Dataplane) setPrefixHint(used bool) error {
	var v uint32
	if used {
		v = 1
	}
	if err := d.objs.HbfHaveBlockPrefixes.Set(v); err != nil {
		return fmt.Errorf("set the prefix-block hint: %w", err)
	}
	return nil
}

// updatePrefixHint tells the program whether block_prefixes holds entries.
func (d *Dataplane) updatePrefixHint() error {
	d.prefixMu.Lock()
	defer d.prefixMu.Unlock()
	return d.updatePrefixHintLocked()
}

func (d *Dataplane) updatePrefixHintLocked() error {
	var key hbfLpmKey
	err := d.objs.BlockPrefixes.NextKey(nil, &key)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return d.setPrefixHint(false)
	}
	if err != nil {
		return fmt.Errorf("look into block prefixes: %w", err)
	}
	return d.setPrefixHint(true)
}

// Unblock removes the block for exactly prefix (not narrower or wider ones).
// It reports false when there was none.
func (d *Dataplane) Unblock(p netip.Prefix) (bool, error) {
	addr, bits, err := key16(p)
	if err != nil {
		return false, err
	}
	if bits == 128 {
		d.filter.mu.Lock()
		if err = d.deleteExact(addr); err == nil {
			d.filter.removed(1)
		}
		d.filter.mu.Unlock()
	} else {
		d.prefixMu.Lock()
		err = d.objs.BlockPrefixes.Delete(hbfLpmKey{Prefixlen: bits, Addr: addr})
		if err == nil {
			err = errors.Join(d.updatePrefixHintLocked(), d.filter.rebuildV4(d.objs.BlockPrefixes))
		}
		d.prefixMu.Unlock()
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("unblock %v: %w", p, err)
	}
	// A scanner's tracker entry would keep dropping its new ports until the
	// window passes; an operator who unblocks means now.
	if bits == 128 {
		_ = d.objs.ScanStates.Delete(addr)
	}
	return true, nil
}

// Allow puts prefix on the allowlist until expires (zero: never): the program
// never drops, and never blocks, its packets for being blocked or scanning.
func (d *Dataplane) Allow(p netip.Prefix, expires time.Time) error {
	addr, bits, err := key16(p)
	if err != nil {
		return err
	}
	rule := d.newRule(bits, expires, OriginOperator)
	k := hbfLpmKey{Prefixlen: bits, Addr: addr}
	d.allowMu.Lock()
	defer d.allowMu.Unlock()
	d.filter.addAllow(k) // the bits before the entry: the program skips the trie without them
	if err := d.objs.AllowPrefixes.Update(k, rule, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("allow %v: %w", p, err)
	}
	return nil
}

// Disallow removes prefix from the allowlist; false when it was not there.
func (d *Dataplane) Disallow(p netip.Prefix) (bool, error) {
	addr, bits, err := key16(p)
	if err != nil {
		return false, err
	}
	d.allowMu.Lock()
	defer d.allowMu.Unlock()
	err = d.objs.AllowPrefixes.Delete(hbfLpmKey{Prefixlen: bits, Addr: addr})
	if err == nil {
		err = d.filter.rebuildAllow(d.objs.AllowPrefixes)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("disallow %v: %w", p, err)
	}
	return true, nil
}

func ruleOf(p netip.Prefix, r hbfRule, ref clockRef) Rule {
	return Rule{
		Prefix:  p,
		Created: ref.toWall(r.CreatedNs),
		Expires: ref.toWall(r.ExpiresNs),
		Packets: r.Packets,
		Origin:  Origin(r.Origin),
	}
}

// Blocks lists every block entry, expired ones included (see Sweep). For
// maps that may hold a million entries, EachBlock does not collect them.
func (d *Dataplane) Blocks() ([]Rule, error) {
	var out []Rule
	err := d.EachBlock(func(r Rule) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// Allows lists the allowlist.
func (d *Dataplane) Allows() ([]Rule, error) {
	out, err := lpmRules(d.objs.AllowPrefixes, d.clock.ref())
	if err != nil {
		return nil, fmt.Errorf("list allowlist: %w", err)
	}
	return out, nil
}

func lpmRules(m *ebpf.Map, ref clockRef) ([]Rule, error) {
	var out []Rule
	var key hbfLpmKey
	var rule hbfRule
	it := m.Iterate()
	for it.Next(&key, &rule) {
		out = append(out, ruleOf(prefixOf(key.Addr, key.Prefixlen), rule, ref))
	}
	return out, it.Err()
}

// SweepStats counts what a sweep removed.
type SweepStats struct {
	Blocks, Allows, Trackers int
}

// SweepRules deletes expired rules, which the program already ignores, so
// the fixed-size maps keep room for new entries.
func (d *Dataplane) SweepRules() (SweepStats, error) {
	var st SweepStats
	nowMono := d.clock.mono()
	expired := func(r hbfRule) bool { return r.ExpiresNs != 0 && r.ExpiresNs <= nowMono }

	var errs []error
	var rule hbfRule
	var stale []hbfAddr
	entries := 0
	errs = append(errs, d.eachExact(func(a *hbfAddr, r *hbfRule) error {
		entries++
		if expired(*r) {
			stale = append(stale, *a)
		}
		return nil
	}))
	d.filter.mu.Lock()
	for _, a := range stale {
		// The program may have replaced an expired entry with a new scan
		// block since it was read: look again right before deleting.
		m, k := d.exactEntry(a)
		if err := m.Lookup(k, &rule); err != nil || !expired(rule) {
			continue
		}
		if err := m.Delete(k); err == nil {
			st.Blocks++
		}
	}
	d.filter.removed(st.Blocks)
	d.filter.mu.Unlock()
	if d.filter.needsRebuild(entries - st.Blocks) {
		errs = append(errs, d.rebuildFilter())
	}

	sweepLPM := func(m *ebpf.Map) int {
		var key hbfLpmKey
		var keys []hbfLpmKey
		it := m.Iterate()
		for it.Next(&key, &rule) {
			if expired(rule) {
				keys = append(keys, key)
			}
		}
		errs = append(errs, it.Err())
		n := 0
		for _, k := range keys {
			if err := m.Delete(k); err == nil {
				n++
			}
		}
		return n
	}
	d.prefixMu.Lock()
	if n := sweepLPM(d.objs.BlockPrefixes); n > 0 {
		st.Blocks += n
		errs = append(errs, d.filter.rebuildV4(d.objs.BlockPrefixes))
	}
	errs = append(errs, d.updatePrefixHintLocked())
	d.prefixMu.Unlock()
	d.allowMu.Lock()
	if st.Allows = sweepLPM(d.objs.AllowPrefixes); st.Allows > 0 {
		errs = append(errs, d.filter.rebuildAllow(d.objs.AllowPrefixes))
	}
	d.allowMu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return st, fmt.Errorf("sweep rules: %w", err)
	}
	return st, nil
}

// SweepTrackers deletes the scan-tracker entries of sources idle for longer
// than window, so the tracker keeps room for new sources.
func (d *Dataplane) SweepTrackers(window time.Duration) (int, error) {
	idleBefore := d.clock.mono()/1e6 - uint64(window.Milliseconds())
	var stale []hbfAddr
	err := eachBatch(d.objs.ScanStates, func(a *hbfAddr, s *hbfScanState) error {
		if s.LastMs < idleBefore {
			stale = append(stale, *a)
		}
		return nil
	})
	n := 0
	for _, a := range stale {
		if d.objs.ScanStates.Delete(a) == nil {
			n++
		}
	}
	if err != nil {
		return n, fmt.Errorf("sweep trackers: %w", err)
	}
	return n, nil
}

// Extend gives the block of exactly p a new expiry (zero: never), keeping
// the rest of the entry: who made it, and its counter.
func (d *Dataplane) Extend(p netip.Prefix, expires time.Time) error {
	addr, bits, err := key16(p)
	if err != nil {
		return err
	}
	var rule hbfRule
	m, key := d.exactEntry(addr)
	if bits < 128 {
		m, key = d.objs.BlockPrefixes, hbfLpmKey{Prefixlen: bits, Addr: addr}
	}
	if err := m.Lookup(key, &rule); err != nil {
		return fmt.Errorf("extend %v: %w", p, err)
	}
	rule.ExpiresNs = d.clock.ref().toMono(expires)
	if err := m.Update(key, rule, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("extend %v: %w", p, err)
	}
	return nil
}
