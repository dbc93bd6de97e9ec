package dataplane

import (
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// batchSize bounds the memory of one batch: 64Ki entries of 48 bytes.
const batchSize = 1 << 16

// BlockMany blocks every prefix until expires (zero: never) with batch map
// operations, and returns how many it wrote. All or nothing: when the kernel
// refuses an entry (a full map), it removes what it wrote and says so.
func (d *Dataplane) BlockMany(prefixes iter.Seq[netip.Prefix], expires time.Time) (int, error) {
	d.prefixMu.Lock()
	defer d.prefixMu.Unlock()

	exp, created := toMono(expires), monoNow()
	var exact []hbfAddr
	var lpm []hbfLpmKey
	var written [][]hbfAddr
	var writtenLPM [][]hbfLpmKey
	total := 0
	rule := func(bits uint32) hbfRule {
		return hbfRule{ExpiresNs: exp, CreatedNs: created, Prefixlen: uint8(bits), Origin: uint8(OriginOperator)}
	}

	flushExact := func() error {
		if len(exact) == 0 {
			return nil
		}
		values := make([]hbfRule, len(exact))
		for i := range values {
			values[i] = rule(128)
		}
		n, err := d.objs.Blocks.BatchUpdate(exact, values, nil)
		written = append(written, exact[:n])
		total += n
		exact = nil
		return err
	}
	flushLPM := func() error {
		if len(lpm) == 0 {
			return nil
		}
		if err := d.setPrefixHint(true); err != nil {
			return err
		}
		for i, k := range lpm {
			// LPM tries have no batch update; few lists hold many prefixes.
			if err := d.objs.BlockPrefixes.Update(k, rule(k.Prefixlen), ebpf.UpdateAny); err != nil {
				writtenLPM = append(writtenLPM, lpm[:i])
				total += i
				return err
			}
		}
		writtenLPM = append(writtenLPM, lpm)
		total += len(lpm)
		lpm = nil
		return nil
	}

	var err error
	for p := range prefixes {
		addr, bits, kerr := key16(p)
		if kerr != nil {
			err = kerr
			break
		}
		if bits == 128 {
			exact = append(exact, addr)
			if len(exact) == batchSize {
				if err = flushExact(); err != nil {
					break
				}
			}
		} else {
			lpm = append(lpm, hbfLpmKey{Prefixlen: bits, Addr: addr})
			if len(lpm) == batchSize {
				if err = flushLPM(); err != nil {
					break
				}
			}
		}
	}
	if err == nil {
		err = errors.Join(flushExact(), flushLPM())
	}
	if err == nil {
		return total, nil
	}
	// Undo: a list is applied whole or not at all.
	for _, keys := range written {
		_, _ = d.objs.Blocks.BatchDelete(keys, nil)
	}
	for _, keys := range writtenLPM {
		for _, k := range keys {
			_ = d.objs.BlockPrefixes.Delete(k)
		}
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
			if err := d.objs.Blocks.Delete(a); err == nil {
				removed++
			} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
		exact = exact[:0]
	}
	d.prefixMu.Lock()
	defer d.prefixMu.Unlock()
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
	errs = append(errs, d.updatePrefixHintLocked())
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("bulk unblock: %w", err)
	}
	return removed, nil
}

// EachBlock calls fn with every block entry, expired ones included, without
// holding them all in memory.
func (d *Dataplane) EachBlock(fn func(Rule) error) error {
	var addr hbfAddr
	var rule hbfRule
	it := d.objs.Blocks.Iterate()
	for it.Next(&addr, &rule) {
		if err := fn(ruleOf(prefixOf(addr, 128), rule)); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read blocks: %w", err)
	}
	var key hbfLpmKey
	it = d.objs.BlockPrefixes.Iterate()
	for it.Next(&key, &rule) {
		if err := fn(ruleOf(prefixOf(key.Addr, key.Prefixlen), rule)); err != nil {
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
		err = d.objs.Blocks.Lookup(addr, &rule)
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
	return ruleOf(p, rule), true, nil
}
