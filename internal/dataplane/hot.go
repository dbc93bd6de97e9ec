package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Hot rules (bpf/hot.h): while a live view watches, the program notes the
// blocks whose drop counts reach a mark, so the busiest sources are found
// without a walk of every block.

// Hot is a block the program noted: its prefix, and its drop count then.
type Hot struct {
	Prefix  netip.Prefix
	Packets uint64
}

// WatchHot turns the program's noting of hot blocks on or off. Off, the
// drop path pays one compare for it.
func (d *Dataplane) WatchHot(on bool) error {
	var v uint32
	if on {
		v = 1
	}
	if err := d.objs.HbfHotWatch.Set(v); err != nil {
		return fmt.Errorf("watch hot blocks: %w", err)
	}
	return nil
}

// DrainHot returns the blocks noted since the last drain, and forgets
// them. A block noted twice comes once, with its later count.
func (d *Dataplane) DrainHot() ([]Hot, error) {
	keys := make([]hbfLpmKey, 256)
	values := make([]uint64, 256)
	var out []Hot
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.HotRules.BatchLookupAndDelete(&cursor, keys, values, nil)
		for i := range n {
			out = append(out, Hot{Prefix: hotPrefix(keys[i]), Packets: values[i]})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("drain hot blocks: %w", err)
		}
	}
}

// hotPrefix is the block's prefix from a note: the packet's address masked
// to the rule's length.
func hotPrefix(k hbfLpmKey) netip.Prefix {
	bits := min(k.Prefixlen, 128)
	p, _ := netip.AddrFrom16(k.Addr.B).Prefix(int(bits))
	return prefixOf(hbfAddr{B: p.Addr().As16()}, bits)
}
