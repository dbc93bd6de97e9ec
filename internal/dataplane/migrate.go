package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// copyState copies every pinned map of an earlier layout into this
// program's maps. The maps' keys and values are the same bytes in both
// layouts, but for the conversions below; sizes may differ.
func (d *Dataplane) copyState(oldDir string) error {
	if _, err := d.copySharedBlocks(oldDir, false); err != nil {
		return err
	}
	for _, name := range pinnedMaps {
		if name == hbfMapBlockFilter {
			continue // rebuilt from the exact blocks
		}
		if _, err := d.copyMap(oldDir, name, false); err != nil {
			return err
		}
	}
	return nil
}

// sharedBlocksMap is the exact-block map of layouts v1 to v6, which held
// both families, IPv4 mapped.
const sharedBlocksMap = "blocks"

// copySharedBlocks copies the earlier layouts' shared exact-block map, if
// oldDir has one, into blocks4 and blocks6: an IPv4-mapped key becomes its
// 4-byte address. onlyMissing keeps entries already here. It returns how
// many it wrote.
func (d *Dataplane) copySharedBlocks(oldDir string, onlyMissing bool) (int, error) {
	path := filepath.Join(oldDir, "maps", sharedBlocksMap)
	old, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("migrate: open %s: %w", path, err)
	}
	defer old.Close()
	if old.KeySize() != uint32(binary.Size(hbfAddr{})) || old.ValueSize() != uint32(binary.Size(hbfRule{})) {
		return 0, fmt.Errorf("migrate: %s holds keys of %d bytes and values of %d, not an address and a rule: "+
			"remove %s to start with empty state", path, old.KeySize(), old.ValueSize(), oldDir)
	}
	flag := ebpf.UpdateAny
	if onlyMissing {
		flag = ebpf.UpdateNoExist
	}
	d.filter.mu.Lock()
	defer d.filter.mu.Unlock()
	n := 0
	err = eachBatch(old, func(a *hbfAddr, r *hbfRule) error {
		d.filter.add(*a) // the bit before the entry: the new program may be live
		m, k := d.exactEntry(*a)
		err := m.Update(k, r, flag)
		if onlyMissing && errors.Is(err, ebpf.ErrKeyExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("migrate: write the block of %v: %w", netip.AddrFrom16(a.B).Unmap(), err)
		}
		n++
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("migrate: copy %s: %w", path, err)
	}
	return n, nil
}

// lpmKeyOf decodes a trie's key as the map holds it.
func lpmKeyOf(raw []byte) hbfLpmKey {
	k := hbfLpmKey{Prefixlen: binary.NativeEndian.Uint32(raw)}
	copy(k.Addr.B[:], raw[4:])
	return k
}

// copyMap copies the entries of the earlier layout's map name into this
// program's; onlyMissing keeps entries already here. It returns how many it
// wrote.
func (d *Dataplane) copyMap(oldDir, name string, onlyMissing bool) (int, error) {
	path := filepath.Join(oldDir, "maps", name)
	old, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil // a map the earlier layout did not have
	}
	if err != nil {
		return 0, fmt.Errorf("migrate: open %s: %w", path, err)
	}
	defer old.Close()
	m, err := d.mapByName(name)
	if err != nil {
		return 0, err
	}
	if name == hbfMapScanStates && old.ValueSize() == uint32(binary.Size(scanStateV2{})) {
		return copyScanStatesV2(old, m, onlyMissing)
	}
	if old.Type() != m.Type() || old.KeySize() != m.KeySize() || old.ValueSize() != m.ValueSize() {
		return 0, fmt.Errorf("migrate: %s changed type, key or value between layouts (%v/%d/%d -> %v/%d/%d) "+
			"and hbf has no conversion for it; remove %s to start with empty state",
			path, old.Type(), old.KeySize(), old.ValueSize(), m.Type(), m.KeySize(), m.ValueSize(), oldDir)
	}
	n := 0
	if old.Type() == ebpf.PerCPUArray {
		if name == hbfMapLimitCounters {
			return copyPerCPU[hbfLimitStats](old, m, name)
		}
		return copyPerCPU[uint64](old, m, name)
	}
	key := make([]byte, old.KeySize())
	val := make([]byte, old.ValueSize())
	flag := ebpf.UpdateAny
	if onlyMissing {
		flag = ebpf.UpdateNoExist
	}
	switch name {
	case hbfMapBlocks4, hbfMapBlocks6:
		// Each address's filter bit before the address: the new program
		// may be live already (FinishMigration).
		d.filter.mu.Lock()
		defer d.filter.mu.Unlock()
	case hbfMapBlockPrefixes:
		d.prefixMu.Lock()
		defer d.prefixMu.Unlock()
	case hbfMapAllowPrefixes:
		d.allowMu.Lock()
		defer d.allowMu.Unlock()
	}
	it := old.Iterate()
	for it.Next(&key, &val) {
		switch name {
		case hbfMapBlocks4:
			d.filter.add(mappedOf(hbfAddr4{B: [4]byte(key)}))
		case hbfMapBlocks6:
			d.filter.add(hbfAddr{B: [16]byte(key)})
		case hbfMapBlockPrefixes:
			d.filter.addV4(lpmKeyOf(key))
		case hbfMapAllowPrefixes:
			d.filter.addAllow(lpmKeyOf(key))
		}
		err := m.Update(key, val, flag)
		if onlyMissing && errors.Is(err, ebpf.ErrKeyExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("migrate: write %s entry %x: %w", name, key, err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("migrate: walk %s: %w", path, err)
	}
	return n, nil
}

// copyPerCPU copies a per-CPU array of values V index by index, up to the
// smaller size.
func copyPerCPU[V any](old, m *ebpf.Map, name string) (int, error) {
	var perCPU []V
	n := 0
	for i := uint32(0); i < min(old.MaxEntries(), m.MaxEntries()); i++ {
		if err := old.Lookup(i, &perCPU); err != nil {
			return n, fmt.Errorf("migrate: read %s[%d]: %w", name, i, err)
		}
		if err := m.Update(i, perCPU, ebpf.UpdateAny); err != nil {
			return n, fmt.Errorf("migrate: write %s[%d]: %w", name, i, err)
		}
		n++
	}
	return n, nil
}

// adoptEarlierLink moves an earlier layout's pinned link for the interface
// to this layout, swapping this program in: the old program ran until this
// instant, on maps whose state is already here.
func (d *Dataplane) adoptEarlierLink(a *Attachment) (bool, error) {
	if d.migrating == "" {
		return false, nil
	}
	old := filepath.Join(d.migrating, linkDirs[d.hook], a.Iface) // v1 ran at XDP only
	if _, err := os.Stat(old); err != nil {
		return false, nil
	}
	if err := os.MkdirAll(d.linkDir(), 0o700); err != nil {
		return false, fmt.Errorf("create pin folder: %w", err)
	}
	l, err := link.LoadPinnedLink(old, nil)
	if err != nil {
		return false, fmt.Errorf("open pinned link %s: %w", old, err)
	}
	// A link opened from a pin is moved (renamed) to its new one: at no
	// point is it unpinned.
	if err := l.Pin(a.pin); err != nil {
		l.Close()
		return false, fmt.Errorf("pin link for %s: %w", a.Iface, err)
	}
	l.Close()
	if err := os.Remove(old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("remove the earlier layout's link pin: %w", err)
	}
	return d.adoptLink(a)
}

// FinishMigration completes a migration once every interface runs this
// program: scan blocks the old program made after the copy are copied too,
// and the earlier layout's pins are removed. It returns the blocks it
// caught up on; without a migration, it does nothing.
func (d *Dataplane) FinishMigration() (int, error) {
	if d.migrating == "" {
		return 0, nil
	}
	for _, dir := range linkDirs {
		links, _ := os.ReadDir(filepath.Join(d.migrating, dir))
		if len(links) > 0 {
			return 0, fmt.Errorf("migrate: %d interface(s) still run the earlier program from %s/%s: "+
				"keep them in the interface list, or remove those pins", len(links), d.migrating, dir)
		}
	}
	n, err := d.copySharedBlocks(d.migrating, true)
	if err != nil {
		return n, err
	}
	for _, name := range blockMaps {
		c, err := d.copyMap(d.migrating, name, true)
		n += c
		if err != nil {
			return n, err
		}
	}
	if err := d.updatePrefixHint(); err != nil {
		return n, err
	}
	if err := os.RemoveAll(d.migrating); err != nil {
		return n, fmt.Errorf("migrate: remove %s: %w", d.migrating, err)
	}
	d.migrating = ""
	return n, nil
}

// scanStateV2 is a scan_states value of layouts v1 and v2, whose ports were
// all TCP's and held no protocol.
type scanStateV2 struct {
	Lock   uint32
	Len    uint8
	Move   uint8
	Flags  uint8
	Pad    uint8
	LastMs uint64
	Slots  [MaxPortsLimit + 1]struct {
		Port   uint16
		Sport  uint16
		SeenMs uint32
		Seq    uint32
	}
	_ [4]byte
}

// copyScanStatesV2 copies the tracker of layout v1 or v2 into this one's:
// its ports become TCP ports, with their times and sequence numbers, so a
// scanner half-way through its ports stays counted across the upgrade.
func copyScanStatesV2(old, m *ebpf.Map, onlyMissing bool) (int, error) {
	flag := ebpf.UpdateAny
	if onlyMissing {
		flag = ebpf.UpdateNoExist
	}
	var key hbfAddr
	var v scanStateV2
	n := 0
	it := old.Iterate()
	for it.Next(&key, &v) {
		next := hbfScanState{Len: v.Len, Flags: v.Flags, LastMs: v.LastMs}
		for i, s := range v.Slots {
			next.Slots[i].Port = uint32(s.Port)
			next.Slots[i].Sport = s.Sport
			next.Slots[i].SeenMs = s.SeenMs
			next.Slots[i].Seq = s.Seq
		}
		err := m.Update(key, &next, flag)
		if onlyMissing && errors.Is(err, ebpf.ErrKeyExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("migrate: write %s entry %v: %w", hbfMapScanStates, netip.AddrFrom16(key.B).Unmap(), err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("migrate: walk the earlier layout's %s: %w", hbfMapScanStates, err)
	}
	return n, nil
}
