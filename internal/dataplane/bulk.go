package dataplane

import (
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
)

// batchSize bounds the memory of one batch: 16Ki keys and their values.
const batchSize = 1 << 14

// Forever pairs every prefix with the zero time, as BlockMany takes a
// block that never expires.
func Forever(prefixes iter.Seq[netip.Prefix]) iter.Seq2[netip.Prefix, time.Time] {
	return Until(prefixes, time.Time{})
}

// Until pairs every prefix with expires, as BlockMany takes it.
func Until(prefixes iter.Seq[netip.Prefix], expires time.Time) iter.Seq2[netip.Prefix, time.Time] {
	return func(yield func(netip.Prefix, time.Time) bool) {
		for p := range prefixes {
			if !yield(p, expires) {
				return
			}
		}
	}
}

// BlockMany blocks every prefix until its expiry (zero: never) with batch
// map operations, one writer per CPU, and returns how many it wrote. An
// existing entry for a prefix is replaced. All or nothing: when the kernel
// refuses an entry (a full map), it removes what it wrote, the entries it
// replaced too, and says so.
func (d *Dataplane) BlockMany(entries iter.Seq2[netip.Prefix, time.Time]) (int, error) {
	d.prefixMu.Lock()
	defer d.prefixMu.Unlock()
	d.filter.mu.Lock()
	defer d.filter.mu.Unlock()

	ref := d.clock.ref()
	rule := func(bits uint32, expires time.Time) hbfRule {
		return hbfRule{ExpiresNs: ref.toMono(expires), CreatedNs: ref.mono, Prefixlen: uint8(bits), Origin: uint8(OriginOperator)}
	}

	// The kernel takes a bucket lock per entry; CPUs write in parallel. A
	// list's entries share one value: its batches share one slice of it,
	// as many as a batch holds. Only batches whose values differ (each
	// CrowdSec decision ends at its own time) carry their own, which go
	// back to free once written; the keys are kept, for an undo.
	type result struct {
		took exactBatch // what the kernel took
		err  error
	}
	work := make(chan exactBatch)
	results := make(chan result)
	free := make(chan []hbfRule, runtime.NumCPU())
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			for b := range work {
				took, err := d.writeBatch(b)
				if b.own {
					select {
					case free <- b.values[:0]:
					default:
					}
				}
				results <- result{took, err}
			}
		})
	}
	var written []exactBatch
	var errs []error
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for r := range results {
			written = append(written, r.took)
			if r.err != nil {
				errs = append(errs, r.err)
			}
		}
	}()
	values := func() []hbfRule {
		select {
		case v := <-free:
			return v
		default:
			return make([]hbfRule, 0, batchSize)
		}
	}
	var same []hbfRule // batchSize copies of the first uniform batch's value
	send := func(b *exactBatch) {
		if !b.own {
			if same == nil {
				same = slices.Repeat([]hbfRule{b.rule}, batchSize)
			}
			if same[0] != b.rule {
				b.values, b.own = append(values(), slices.Repeat([]hbfRule{b.rule}, b.len())...), true
			} else {
				b.values = same[:b.len()]
			}
		}
		work <- *b
	}

	type lpmEntry struct {
		key  hbfLpmKey
		rule hbfRule
	}
	var lpm []lpmEntry
	v4 := exactBatch{v4: []hbfAddr4{}}
	v6 := exactBatch{v6: []hbfAddr{}}
	var err error
	for p, expires := range entries {
		addr, bits, kerr := key16(p)
		if kerr != nil {
			err = kerr
			break
		}
		r := rule(bits, expires)
		if bits < 128 {
			lpm = append(lpm, lpmEntry{hbfLpmKey{Prefixlen: bits, Addr: addr}, r})
			continue
		}
		d.filter.add(addr) // the bit before the entry: see block_filter
		if isMapped(addr) {
			v4.add(r, values)
			if v4.v4 = append(v4.v4, addr4Of(addr)); v4.len() == batchSize {
				send(&v4)
				v4 = exactBatch{v4: []hbfAddr4{}}
			}
		} else {
			v6.add(r, values)
			if v6.v6 = append(v6.v6, addr); v6.len() == batchSize {
				send(&v6)
				v6 = exactBatch{v6: []hbfAddr{}}
			}
		}
	}
	for _, b := range []*exactBatch{&v4, &v6} {
		if err == nil && b.len() > 0 {
			send(b)
		}
	}
	close(work)
	wg.Wait()
	close(results)
	<-collected

	// Prefixes: LPM tries have no batch update, and few lists hold many.
	var writtenLPM []hbfLpmKey
	if err == nil && len(errs) == 0 && len(lpm) > 0 {
		if err = d.setPrefixHint(true); err == nil {
			for _, e := range lpm {
				d.filter.addV4(e.key)
				if err = d.objs.BlockPrefixes.Update(e.key, e.rule, ebpf.UpdateAny); err != nil {
					break
				}
				writtenLPM = append(writtenLPM, e.key)
			}
		}
	}
	total := len(writtenLPM)
	for _, b := range written {
		total += b.len()
	}
	if err = errors.Join(append(errs, err)...); err == nil {
		return total, nil
	}
	// Undo: a list is applied whole or not at all.
	for _, b := range written {
		d.filter.removed(d.deleteBatch(b))
	}
	for _, k := range writtenLPM {
		_ = d.objs.BlockPrefixes.Delete(k)
	}
	if len(lpm) > 0 {
		err = errors.Join(err, d.filter.rebuildV4(d.objs.BlockPrefixes))
	}
	return 0, fmt.Errorf("bulk block after %d entries: %w (nothing of it was kept)", total, errors.Join(err, d.updatePrefixHintLocked()))
}

// UnblockMany removes the blocks of exactly these prefixes; absent ones are
// skipped. It returns how many it removed.
func (d *Dataplane) UnblockMany(prefixes iter.Seq[netip.Prefix]) (int, error) {
	removed := 0
	var errs []error
	var exact []hbfAddr
	flush := func() {
		for _, a := range exact {
			if err := d.deleteExact(a); err == nil {
				removed++
				d.filter.removed(1)
			} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
		exact = exact[:0]
	}
	d.prefixMu.Lock()
	defer d.prefixMu.Unlock()
	d.filter.mu.Lock()
	defer d.filter.mu.Unlock()
	for p := range prefixes {
		addr, bits, err := key16(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if bits == 128 {
			exact = append(exact, addr)
			if len(exact) == batchSize {
				flush()
			}
			continue
		}
		if err := d.objs.BlockPrefixes.Delete(hbfLpmKey{Prefixlen: bits, Addr: addr}); err == nil {
			removed++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	flush()
	errs = append(errs, d.updatePrefixHintLocked(), d.filter.rebuildV4(d.objs.BlockPrefixes))
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("bulk unblock: %w", err)
	}
	return removed, nil
}

// eachBatch calls fn for every entry of a hash map, read in batches: one
// syscall per entry would take seconds for a million.
func eachBatch[K, V any](m *ebpf.Map, fn func(*K, *V) error) error {
	keys := make([]K, 1024)
	values := make([]V, 1024)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, values, nil)
		for i := range n {
			if ferr := fn(&keys[i], &values[i]); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// EachBlock calls fn with every block entry, expired ones included, without
// holding them all in memory.
func (d *Dataplane) EachBlock(fn func(Rule) error) error {
	ref := d.clock.ref()
	err := d.eachExact(func(a *hbfAddr, r *hbfRule) error {
		return fn(ruleOf(prefixOf(*a, 128), *r, ref))
	})
	if err != nil {
		return fmt.Errorf("read blocks: %w", err)
	}
	var key hbfLpmKey
	var rule hbfRule
	it := d.objs.BlockPrefixes.Iterate()
	for it.Next(&key, &rule) {
		if err := fn(ruleOf(prefixOf(key.Addr, key.Prefixlen), rule, ref)); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read block prefixes: %w", err)
	}
	return nil
}

// LookupBlock returns the kernel's block entry for exactly p.
func (d *Dataplane) LookupBlock(p netip.Prefix) (Rule, bool, error) {
	addr, bits, err := key16(p)
	if err != nil {
		return Rule{}, false, err
	}
	var rule hbfRule
	if bits == 128 {
		m, k := d.exactEntry(addr)
		err = m.Lookup(k, &rule)
	} else {
		// An LPM lookup finds the longest match: check it is p itself.
		err = d.objs.BlockPrefixes.Lookup(hbfLpmKey{Prefixlen: bits, Addr: addr}, &rule)
		if err == nil && uint32(rule.Prefixlen) != bits {
			err = ebpf.ErrKeyNotExist
		}
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Rule{}, false, nil
	}
	if err != nil {
		return Rule{}, false, fmt.Errorf("look up %v: %w", p, err)
	}
	return ruleOf(p, rule, d.clock.ref()), true, nil
}
