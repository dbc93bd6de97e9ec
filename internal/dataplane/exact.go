package dataplane

import (
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// Exact blocks live in a map per family (bpf/maps.h): blocks4 keyed by the
// 4-byte IPv4 address, blocks6 by the 16-byte IPv6 one. The rest of the
// daemon's side speaks of addresses in the 16-byte form, IPv4 mapped; these
// helpers pick the map and its key.

func isMapped(a hbfAddr) bool { return netip.AddrFrom16(a.B).Is4In6() }

// addr4Of is the blocks4 key of an IPv4-mapped address.
func addr4Of(a hbfAddr) hbfAddr4 {
	var k hbfAddr4
	copy(k.B[:], a.B[12:])
	return k
}

// mappedOf is the 16-byte form of a blocks4 key.
func mappedOf(k hbfAddr4) hbfAddr { return hbfAddr{B: netip.AddrFrom4(k.B).As16()} }

// exactEntry is the map that holds the exact block of a, and a's key there.
func (d *Dataplane) exactEntry(a hbfAddr) (*ebpf.Map, any) {
	if isMapped(a) {
		return d.objs.Blocks4, addr4Of(a)
	}
	return d.objs.Blocks6, a
}

// eachExact calls fn with every exact block, IPv4 ones mapped.
func (d *Dataplane) eachExact(fn func(*hbfAddr, *hbfRule) error) error {
	err := eachBatch(d.objs.Blocks4, func(k *hbfAddr4, r *hbfRule) error {
		a := mappedOf(*k)
		return fn(&a, r)
	})
	if err != nil {
		return err
	}
	return eachBatch(d.objs.Blocks6, fn)
}

// exactBatch is a batch of exact addresses of one family, as BlockMany
// writes them: v4's keys go to blocks4, v6's to blocks6, with values,
// one per key when written.
type exactBatch struct {
	v4     []hbfAddr4
	v6     []hbfAddr
	rule   hbfRule   // every key's value, while own is false
	values []hbfRule // each key's value: own, once they differ
	own    bool
}

func (b *exactBatch) len() int { return len(b.v4) + len(b.v6) }

// add notes the value of the key about to be appended: while every key's
// is the same, the batch keeps one; once one differs, a slice of its own
// from alloc.
func (b *exactBatch) add(r hbfRule, alloc func() []hbfRule) {
	n := b.len()
	if !b.own {
		if n == 0 || r == b.rule {
			b.rule = r
			return
		}
		b.values, b.own = append(alloc(), slices.Repeat([]hbfRule{b.rule}, n)...), true
	}
	b.values = append(b.values, r)
}

// writeBatch puts the batch into its map, and returns the keys the kernel
// took.
func (d *Dataplane) writeBatch(b exactBatch) (exactBatch, error) {
	if b.v4 != nil {
		n, err := d.objs.Blocks4.BatchUpdate(b.v4, b.values, nil)
		return exactBatch{v4: b.v4[:n]}, err
	}
	n, err := d.objs.Blocks6.BatchUpdate(b.v6, b.values, nil)
	return exactBatch{v6: b.v6[:n]}, err
}

// deleteBatch removes a batch that writeBatch took, and returns how many
// entries went.
func (d *Dataplane) deleteBatch(b exactBatch) int {
	if b.v4 != nil {
		n, _ := d.objs.Blocks4.BatchDelete(b.v4, nil)
		return n
	}
	n, _ := d.objs.Blocks6.BatchDelete(b.v6, nil)
	return n
}

// deleteExact removes a's exact block; ebpf.ErrKeyNotExist when there was
// none. The caller holds d.filter.mu and notes the removal.
func (d *Dataplane) deleteExact(a hbfAddr) error {
	m, k := d.exactEntry(a)
	return m.Delete(k)
}

// rebuildFilter rebuilds the block filter's idle side from both maps.
func (d *Dataplane) rebuildFilter() error { return d.filter.rebuild(d.eachExact) }
