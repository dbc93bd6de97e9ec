package dataplane

import (
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/cilium/ebpf"
)

// batchSize bounds the memory of one batch: 16Ki entries of 48 bytes.
const batchSize = 1 << 14

// BlockMany blocks every prefix until expires (zero: never) with batch map
// operations, one writer per CPU, and returns how many it wrote. All or
// nothing: when the kernel refuses an entry (a full map), it removes what it
// wrote and says so.
func (d *Dataplane) BlockMany(prefixes iter.Seq[netip.Prefix], expires time.Time) (int, error) {
	d.prefixMu.Lock()
	defer d.prefixMu.Unlock()
	d.filter.mu.Lock()
	defer d.filter.mu.Unlock()

	ref := d.clock.ref()
	exp, created := ref.toMono(expires), ref.mono
	rule := func(bits uint32) hbfRule {
		return hbfRule{ExpiresNs: exp, CreatedNs: created, Prefixlen: uint8(bits), Origin: uint8(OriginOperator)}
	}
	// Every exact entry gets the same value: one read-only slice serves all.
	values := make([]hbfRule, batchSize)
	for i := range values {
		values[i] = rule(128)
	}

	// The kernel takes a bucket lock per entry; CPUs write in parallel.
	type result struct {
		took exactBatch // what the kernel took
		err  error
	}
	work := make(chan exactBatch)
	results := make(chan result)
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			for b := range work {
				took, err := d.writeBatch(b, values)
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

	var lpm []hbfLpmKey
	var v4 []hbfAddr4
	var v6 []hbfAddr
	var err error
	for p := range prefixes {
		addr, bits, kerr := key16(p)
		if kerr != nil {
			err = kerr
			break
		}
		if bits < 128 {
			lpm = append(lpm, hbfLpmKey{Prefixlen: bits, Addr: addr})
			continue
		}
		d.filter.add(addr) // the bit before the entry: see block_filter
		if isMapped(addr) {
			if v4 = append(v4, addr4Of(addr)); len(v4) == batchSize {
				work <- exactBatch{v4: v4}
				v4 = nil
			}
		} else if v6 = append(v6, addr); len(v6) == batchSize {
			work <- exactBatch{v6: v6}
			v6 = nil
		}
	}
	if err == nil && len(v4) > 0 {
		work <- exactBatch{v4: v4}
	}
	if err == nil && len(v6) > 0 {
		work <- exactBatch{v6: v6}
	}
	close(work)
	wg.Wait()
	close(results)
	<-collected

	// Prefixes: LPM tries have no batch update, and few lists hold many.
	var writtenLPM []hbfLpmKey
	if err == nil && len(errs) == 0 && len(lpm) > 0 {
		if err = d.setPrefixHint(true); err == nil {
			for _, k := range lpm {
				d.filter.addV4(k)
				if err = d.objs.BlockPrefixes.Update(k, rule(k.Prefixlen), ebpf.UpdateAny); err != nil {
					break
				}
				writtenLPM = append(writtenLPM, k)
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
