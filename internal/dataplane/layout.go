package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// The pinned layout: what hbf pins under Options.PinPath, so that its
// state and its links outlive the process, and the layouts of earlier hbfs
// that Load takes over.
//
//	<pin path>/<version>/maps/<map>          pinnedMaps, adopted whole or not at all
//	<pin path>/<version>/links/<iface>       XDP links (HookXDP)
//	<pin path>/<version>/tcx-links/<iface>   TCX links (HookTCX)
//	<pin path>/<version>/tracer              the connection tracer's link, while a TCP
//	                                         port has a limit
//	<pin path>/<version>-resized/            this layout, moved aside while the block
//	                                         maps take a new capacity
//	<pin path>/<earlier version>/            an earlier hbf's, migrated (migrate.go)

// layoutVersion names this layout's folder. Bump it when a pinned map's
// key, value, type or size changes, so an old pin is never read with a new
// layout, and list the old one in earlierLayouts: Load migrates from it.
const layoutVersion = "v8"

// earlierLayouts are the layouts Load migrates from, newest first, each
// with what the next one changed; migrate.go converts what needs it.
var earlierLayouts = []string{
	"v7", // v8: connection limits (limits, limit_counters, conn_logs, datagram_logs)
	"v6", // v7: exact blocks in a map per family, IPv4's keyed by 4 bytes (blocks split into blocks4 and blocks6); block_filter's words in one element
	"v5", // v6: block_filter holds the IPv6 allowlist by /64 too
	"v4", // v5: block_filter holds the allowlist's bits too
	"v3", // v4: block_filter, pinned beside blocks
	"v2", // v3: a tracked port holds its protocol (scan_states' slots grew)
	"v1", // v2: scan_states grew from 2^16 to 2^18 entries
}

// pinnedMaps are the maps whose content is state worth keeping; the ring
// buffer, the settings and the tracker template belong to one program.
var pinnedMaps = []string{
	hbfMapBlocks4,
	hbfMapBlocks6,
	hbfMapBlockPrefixes,
	hbfMapAllowPrefixes,
	hbfMapScanStates,
	hbfMapCounters,
	hbfMapBlockFilter,
	hbfMapLimits,
	hbfMapLimitCounters,
	hbfMapConnLogs,
	hbfMapDatagramLogs,
}

func (d *Dataplane) mapDir() string { return filepath.Join(d.pinDir, "maps") }

// linkDir holds the links of the hook this program runs at: an XDP link
// never has a TC program swapped in, nor a TCX link an XDP one.
func (d *Dataplane) linkDir() string { return filepath.Join(d.pinDir, linkDirs[d.hook]) }

// linkDirs are the folders of each hook's pinned links.
var linkDirs = map[Hook]string{HookXDP: "links", HookTCX: "tcx-links"}

// adoptMaps opens the maps pinned in dir. All or none: a partial set means an
// interrupted pin or unpin, and mixing old and new maps would split the state.
func adoptMaps(spec *ebpf.CollectionSpec, dir string) (map[string]*ebpf.Map, error) {
	out := make(map[string]*ebpf.Map)
	closeAll := func() {
		for _, m := range out {
			m.Close()
		}
	}
	var missing []string
	for _, name := range pinnedMaps {
		path := filepath.Join(dir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			missing = append(missing, name)
			continue
		}
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("open pinned map %s: %w", path, err)
		}
		if err := spec.Maps[name].Compatible(m); err != nil {
			m.Close()
			closeAll()
			return nil, fmt.Errorf("pinned map %s does not match this hbf's layout (%w); "+
				"remove %s to start with empty state", path, err, dir)
		}
		out[name] = m
	}
	if len(out) > 0 && len(missing) > 0 {
		closeAll()
		return nil, fmt.Errorf("pinned maps in %s are incomplete (missing %v); "+
			"remove the folder to start with empty state", dir, missing)
	}
	return out, nil
}

func (d *Dataplane) pinMaps() error {
	for _, name := range pinnedMaps {
		if err := d.pinMap(name); err != nil {
			return err
		}
	}
	return nil
}

// pinMap pins the named map in the map folder, where it may have been
// before (the earlier pin removed from outside).
func (d *Dataplane) pinMap(name string) error {
	m, err := d.mapByName(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.mapDir(), 0o700); err != nil {
		return fmt.Errorf("create pin folder: %w", err)
	}
	_ = m.Unpin() // forgets a removed path; Pin would take it for still pinned
	if err := m.Pin(filepath.Join(d.mapDir(), name)); err != nil {
		return fmt.Errorf("pin map %s: %w", name, err)
	}
	return nil
}

func (d *Dataplane) mapByName(name string) (*ebpf.Map, error) {
	switch name {
	case hbfMapBlocks4:
		return d.objs.Blocks4, nil
	case hbfMapBlocks6:
		return d.objs.Blocks6, nil
	case hbfMapBlockPrefixes:
		return d.objs.BlockPrefixes, nil
	case hbfMapAllowPrefixes:
		return d.objs.AllowPrefixes, nil
	case hbfMapScanStates:
		return d.objs.ScanStates, nil
	case hbfMapCounters:
		return d.objs.Counters, nil
	case hbfMapBlockFilter:
		return d.objs.BlockFilter, nil
	case hbfMapLimits:
		return d.objs.Limits, nil
	case hbfMapLimitCounters:
		return d.objs.LimitCounters, nil
	case hbfMapConnLogs:
		return d.objs.ConnLogs, nil
	case hbfMapDatagramLogs:
		return d.objs.DatagramLogs, nil
	}
	return nil, fmt.Errorf("no map %q", name)
}

// Unpin removes everything Load and Attach pinned: links (which detaches the
// program once this process closes its handles) and maps.
func (d *Dataplane) Unpin() error {
	if d.pinDir == "" {
		return nil
	}
	if err := os.RemoveAll(d.pinDir); err != nil {
		return fmt.Errorf("remove pins: %w", err)
	}
	// The parent is ours too when nothing else lives there.
	_ = os.Remove(filepath.Dir(d.pinDir))
	return nil
}

// resizedLayout is the folder this layout's pins move to when the block
// maps' capacity changes across a restart: from there they migrate into
// maps of the new size as an earlier layout's do.
const resizedLayout = layoutVersion + "-resized"

// earlierLayout returns the folder of the newest earlier layout pinned under
// pinPath, or "".
func earlierLayout(pinPath string) string {
	for _, v := range append([]string{resizedLayout}, earlierLayouts...) {
		dir := filepath.Join(pinPath, v)
		if _, err := os.Stat(filepath.Join(dir, "maps")); err == nil {
			return dir
		}
	}
	return ""
}

// Migrating names the earlier layout this Dataplane took its state from,
// or "".
func (d *Dataplane) Migrating() string { return d.migrating }

// Resizing reports whether the migration is a change of the block maps'
// capacity.
func (d *Dataplane) Resizing() bool { return filepath.Base(d.migrating) == resizedLayout }

// resizeAside moves this layout's pins aside when the pinned block maps
// differ from spec's in size alone, so that Load migrates their entries
// into maps of the new size. A capacity below the entries pinned is
// refused before anything moves.
func resizeAside(spec *ebpf.CollectionSpec, pinPath string) error {
	dir := filepath.Join(pinPath, layoutVersion)
	resized := false
	for _, name := range blockMaps {
		path := filepath.Join(dir, "maps", name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("open pinned map %s: %w", path, err)
		}
		want := spec.Maps[name]
		sizeOnly := m.Type() == want.Type && m.KeySize() == want.KeySize && m.ValueSize() == want.ValueSize &&
			m.MaxEntries() != want.MaxEntries
		if sizeOnly {
			n, err := countEntries(m)
			if err == nil && n > int(want.MaxEntries) {
				err = &CapacityError{Path: path, Prefixes: name == hbfMapBlockPrefixes, Entries: n, Capacity: int(want.MaxEntries)}
			}
			if err != nil {
				m.Close()
				return err
			}
			resized = true
		}
		m.Close()
	}
	if !resized {
		return nil
	}
	if _, err := os.Stat(filepath.Join(pinPath, resizedLayout)); err == nil {
		return fmt.Errorf("a resize of %s was left half-way in %s: start with the capacity it had, "+
			"or remove %s to start with empty state", dir, filepath.Join(pinPath, resizedLayout), pinPath)
	}
	if err := os.Rename(dir, filepath.Join(pinPath, resizedLayout)); err != nil {
		return fmt.Errorf("move the pins aside to resize the block maps: %w", err)
	}
	return nil
}

// blockMaps are the maps a capacity sizes.
var blockMaps = []string{hbfMapBlocks4, hbfMapBlocks6, hbfMapBlockPrefixes}

// CapacityError refuses a capacity below the entries a pinned block map
// holds: Load moves nothing, and the state stays as it was.
type CapacityError struct {
	Path     string // the pinned map
	Prefixes bool   // the prefix map (Capacity.BlockPrefixes), else an exact one (Capacity.Blocks)
	Entries  int
	Capacity int
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("%s holds %d entries, more than the new capacity %d: raise the capacity to %d or more, or unblock first",
		e.Path, e.Entries, e.Capacity, e.Entries)
}

func countEntries(m *ebpf.Map) (int, error) {
	n := 0
	var prev any // nil: the first key
	key := make([]byte, m.KeySize())
	for {
		err := m.NextKey(prev, &key)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("count the entries of %v: %w", m, err)
		}
		n++
		prev = slices.Clone(key)
	}
}

// Uninstall removes what hbf pinned under pinPath while no daemon holds it:
// each pinned link is unpinned (which detaches its program) and the maps'
// pins are removed. It returns the interfaces it detached.
func Uninstall(pinPath string) ([]string, error) {
	var detached []string
	for _, v := range append([]string{layoutVersion, resizedLayout}, earlierLayouts...) {
		d, err := uninstallLayout(filepath.Join(pinPath, v))
		detached = append(detached, d...)
		if err != nil {
			return detached, err
		}
	}
	_ = os.Remove(pinPath) // ours too when nothing else lives there
	return detached, nil
}

func uninstallLayout(dir string) ([]string, error) {
	var paths []string
	for _, sub := range linkDirs {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read pinned links: %w", err)
		}
		for _, e := range entries {
			paths = append(paths, filepath.Join(dir, sub, e.Name()))
		}
	}
	var detached []string
	for _, path := range paths {
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			return detached, fmt.Errorf("open pinned link %s: %w", path, err)
		}
		err = l.Unpin()
		l.Close()
		if err != nil {
			return detached, fmt.Errorf("unpin %s: %w", path, err)
		}
		detached = append(detached, filepath.Base(path))
	}
	if err := os.RemoveAll(dir); err != nil {
		return detached, fmt.Errorf("remove pins: %w", err)
	}
	return detached, nil
}
