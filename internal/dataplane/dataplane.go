package dataplane

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/hbf-firewall/hbf/internal/ports"
)

// MaxPortsLimit is the largest threshold the program's tracker can hold: it
// keeps one port more than the threshold (HBF_SCAN_SLOTS).
const MaxPortsLimit = len(hbfScanEvent{}.Ports) - 1

// MinIPv6ScanPrefix is the widest prefix a scan may block: an ISP's customer
// gets a /48 to /64; wider would take in other customers.
const MinIPv6ScanPrefix = 48

// layoutVersion names the pinned-object folder. Bump it when a pinned map's
// key, value, type or size changes, so an old pin is never read with a new
// layout, and list the old one in earlierLayouts: Load migrates from it.
//
// v2: scan_states grew from 2^16 to 2^18 entries.
// v3: a tracked port holds its protocol (scan_states' slots grew).
// v4: block_filter, pinned beside blocks.
// v5: block_filter holds the allowlist's bits too.
// v6: block_filter holds the IPv6 allowlist by /64 too.
// v7: exact blocks in a map per family, IPv4's keyed by 4 bytes: blocks
// split into blocks4 and blocks6; block_filter's words in one element.
const layoutVersion = "v7"

// earlierLayouts are the layouts Load migrates from, newest first.
var earlierLayouts = []string{"v6", "v5", "v4", "v3", "v2", "v1"}

// Settings are the program's runtime knobs; SetSettings changes them without
// reloading.
type Settings struct {
	// MaxPorts: a source that tries more distinct ports than this within
	// Window is a scanner.
	MaxPorts int
	Window   time.Duration
	// BlockDuration of the block the program inserts for a scanner; 0 means
	// the block never expires.
	BlockDuration time.Duration
	// Monitor: scans are reported as "would block"; the program blocks and
	// drops nothing for them. Blocks already made stay in force.
	Monitor bool
	// IgnorePorts never count toward a scan, nor are a reason to block.
	IgnorePorts ports.List
	// UDPScans: whether UDP datagrams to closed ports count, and what a
	// scan they take past the threshold gets.
	UDPScans UDPScans
	// CountClosed: a SYN counts only on a closed port of the host (no
	// socket, not served by SetServed, not ignored). Otherwise every SYN
	// counts, but to an ignored port.
	CountClosed bool
	// Ephemeral is the host's ephemeral port range (ip_local_port_range):
	// a datagram from a port below 1024 into it is a late answer to the
	// host's own query, never an attempt. Zero: none.
	Ephemeral [2]uint16
	// MaxBlocksPerMinute bounds the scan blocks the program makes in a
	// minute, so spoofed scans (nmap -D RND:100) cannot buy a block each.
	// Past it a scanner is reported and its attempts dropped for the rest of
	// its window, unblocked. 0: no limit.
	MaxBlocksPerMinute int
	// IPv6ScanPrefix: off-link IPv6 sources are counted and blocked per
	// prefix of this length (one host owns a /64 and can rotate addresses
	// in it); on-link ones (SetOnLink) per address. 128: per address.
	IPv6ScanPrefix int
}

// UDPScans is what UDP datagrams to closed ports count for.
type UDPScans string

const (
	UDPBlock  UDPScans = "block"  // they count, and a UDP scan is blocked as a TCP one
	UDPReport UDPScans = "report" // they count; a scan they complete is reported, never blocked
	UDPOff    UDPScans = "off"    // they never count
)

// Validate reports the first setting the program cannot honour.
func (s Settings) Validate() error {
	if s.MaxPorts < 1 || s.MaxPorts > MaxPortsLimit {
		return fmt.Errorf("max ports %d: must be between 1 and %d", s.MaxPorts, MaxPortsLimit)
	}
	if s.Window < time.Millisecond || s.Window > 24*time.Hour {
		return fmt.Errorf("window %s: must be between 1ms and 24h", s.Window)
	}
	if s.BlockDuration < 0 {
		return fmt.Errorf("block duration %s: must not be negative (0 means no expiry)", s.BlockDuration)
	}
	if s.MaxBlocksPerMinute < 0 || s.MaxBlocksPerMinute > math.MaxUint32 {
		return fmt.Errorf("scan blocks per minute %d: must be between 0 (no limit) and %d", s.MaxBlocksPerMinute, uint32(math.MaxUint32))
	}
	switch s.UDPScans {
	case "", UDPBlock, UDPReport, UDPOff:
	default:
		return fmt.Errorf("UDP scans %q: must be block, report or off", s.UDPScans)
	}
	if s.Ephemeral[0] > s.Ephemeral[1] {
		return fmt.Errorf("ephemeral ports %d-%d: the first must not be above the last", s.Ephemeral[0], s.Ephemeral[1])
	}
	if s.IPv6ScanPrefix < MinIPv6ScanPrefix || s.IPv6ScanPrefix > 128 {
		return fmt.Errorf("IPv6 scan prefix /%d: must be between /%d and /128 (per address)", s.IPv6ScanPrefix, MinIPv6ScanPrefix)
	}
	return nil
}

// Options for Load.
type Options struct {
	// PinPath is a folder on a bpffs. When set, the maps that hold state
	// (rules, scan tracker, counters) and the XDP links are pinned under it,
	// and a later Load with the same PinPath adopts them, so the state
	// outlives the process. Empty: nothing is pinned (unit tests).
	PinPath string

	// ReplaceForeign: an XDP program of another tool on an interface is
	// detached so that hbf can attach. Otherwise Attach refuses.
	ReplaceForeign bool

	// Capacity sizes the block maps; zero fields take the defaults. A
	// pinned map of another size is copied into maps of this one, as an
	// earlier layout is.
	Capacity Capacity

	// firstAttemptSlots sizes the tracker's first tier (a power of two; 0:
	// the program's own size). Tests make it small, to empty it cheaply.
	firstAttemptSlots uint32

	// Hook is where the program decides; only its build is loaded. Zero:
	// HookXDP.
	Hook Hook
	// TCXTail puts the program at the tail of TC ingress instead of the
	// head (HookTCX): after the others, which may then hide traffic from
	// it. The head is kept (keepHead) only when asked for.
	TCXTail bool
}

// Capacity is how many entries the block maps hold.
type Capacity struct {
	Blocks        int // exact addresses of each family (blocks4, blocks6)
	BlockPrefixes int // prefixes (block_prefixes)
}

// DefaultCapacity: a million exact addresses of each family (16 MiB of
// buckets a map from the start, ~100 bytes an entry as entries are added)
// and 2^18 prefixes.
var DefaultCapacity = Capacity{Blocks: 1 << 20, BlockPrefixes: 1 << 18}

// Capacity bounds.
const (
	MinCapacity = 1024
	MaxCapacity = 1 << 26
)

// withDefaults fills the zero fields.
func (c Capacity) withDefaults() Capacity {
	if c.Blocks == 0 {
		c.Blocks = DefaultCapacity.Blocks
	}
	if c.BlockPrefixes == 0 {
		c.BlockPrefixes = DefaultCapacity.BlockPrefixes
	}
	return c
}

// Validate says which size the kernel's maps cannot take.
func (c Capacity) Validate() error {
	c = c.withDefaults()
	if c.Blocks < MinCapacity || c.Blocks > MaxCapacity {
		return fmt.Errorf("block map capacity %d: must be between %d and %d", c.Blocks, MinCapacity, MaxCapacity)
	}
	if c.BlockPrefixes < MinCapacity || c.BlockPrefixes > MaxCapacity {
		return fmt.Errorf("prefix map capacity %d: must be between %d and %d", c.BlockPrefixes, MinCapacity, MaxCapacity)
	}
	return nil
}

// ForLists is how much of the capacity lists may take: a sixteenth, at
// most 32,768 entries, stays free for the blocks the program makes of
// scanners (30 a minute by default, each for an hour) and for manual and
// fleet blocks, so that a list that fills its room never leaves a scanner
// unblockable. The default capacity takes a million-address list.
func (c Capacity) ForLists() Capacity {
	room := func(n int) int { return n - min(n/16, listReserveMax) }
	return Capacity{Blocks: room(c.Blocks), BlockPrefixes: room(c.BlockPrefixes)}
}

// listReserveMax bounds what ForLists keeps free.
const listReserveMax = 32768

// Hook is where the program decides: one source, a build for each.
type Hook string

const (
	// HookXDP runs hbf_xdp on the interface's XDP hook: first and cheapest,
	// but the hook holds one program.
	HookXDP Hook = "xdp"
	// HookTCX runs hbf_tc at TC ingress through TCX (Linux 6.6+), at the
	// head of the programs there, beside them.
	HookTCX Hook = "tcx"
)

func (h Hook) program() string {
	if h == HookTCX {
		return hbfProgHbfTc
	}
	return hbfProgHbfXdp
}

// objects are the program of one hook and what every build shares.
type objects struct {
	shared
	Program *ebpf.Program
	// spec and maps load another copy of Program on the same maps, the
	// global variables' included (keepHead); globals are those of maps
	// no field above holds, closed with them.
	spec    *ebpf.CollectionSpec
	maps    map[string]*ebpf.Map
	globals []*ebpf.Map
	// formerIDs are earlier copies' ids, still running on links a copy
	// has not replaced yet.
	formerIDs map[uint32]bool
}

// shared are the maps and the variables of every build of the program.
type shared struct {
	hbfMaps
	hbfVariables
}

func (o *objects) Close() error {
	if o.Program != nil {
		o.Program.Close()
	}
	err := o.hbfMaps.Close()
	for _, m := range o.globals {
		m.Close()
	}
	return err
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
}

// Dataplane is the loaded program and its maps. Its methods are safe for
// concurrent use.
type Dataplane struct {
	objs    objects
	pinDir  string // "" when not pinned
	adopted bool
	// migrating is the earlier layout's folder whose state this program
	// took over; its links move over as they attach (FinishMigration).
	migrating string
	hashKey   [2]uint64 // of first_attempts' slots; secret, one per program
	clock     *clock    // the program's, shared with the event reader
	filter    *blockFilter

	replaceForeign bool
	replaced       []string // foreign programs Attach detached
	hook           Hook
	tcxTail        bool

	// prefixMu serialises changes of block_prefixes with the program's
	// hint that the map is not empty.
	prefixMu sync.Mutex
	// allowMu serialises changes of allow_prefixes with the rebuilds of
	// the allow filter.
	allowMu sync.Mutex
}

// Load loads the XDP program into the kernel, adopting the maps pinned under
// opts.PinPath when there are any. It does not attach the program.
func Load(opts Options) (*Dataplane, error) {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK. Raising it
	// needs CAP_SYS_RESOURCE, which a container may not have and newer
	// kernels do not need: a refusal is reported only if the load fails.
	memlockErr := rlimit.RemoveMemlock()
	spec, err := loadHbf()
	if err != nil {
		return nil, err
	}
	if err := CheckSocketLookup(cmp.Or(opts.Hook, HookXDP)); err != nil {
		return nil, err
	}

	capacity := opts.Capacity.withDefaults()
	if err := capacity.Validate(); err != nil {
		return nil, err
	}
	spec.Maps[hbfMapBlocks4].MaxEntries = uint32(capacity.Blocks)
	spec.Maps[hbfMapBlocks6].MaxEntries = uint32(capacity.Blocks)
	spec.Maps[hbfMapBlockPrefixes].MaxEntries = uint32(capacity.BlockPrefixes)

	if n := opts.firstAttemptSlots; n != 0 {
		if n&(n-1) != 0 {
			return nil, fmt.Errorf("first-attempt slots %d: not a power of two", n)
		}
		spec.Maps[hbfMapFirstAttempts].MaxEntries = n
		if err := spec.Variables[hbfVarHbfFirstAttemptMask].Set(n - 1); err != nil {
			return nil, fmt.Errorf("size the tracker: %w", err)
		}
	}

	d := &Dataplane{replaceForeign: opts.ReplaceForeign, clock: new(clock), hook: cmp.Or(opts.Hook, HookXDP), tcxTail: opts.TCXTail}
	if err := binary.Read(rand.Reader, binary.NativeEndian, &d.hashKey); err != nil {
		return nil, fmt.Errorf("draw the tracker's hash key: %w", err)
	}
	collOpts := &ebpf.CollectionOptions{}
	if opts.PinPath != "" {
		if err := ensureBPFFS(opts.PinPath); err != nil {
			return nil, err
		}
		d.pinDir = filepath.Join(opts.PinPath, layoutVersion)
		if err := resizeAside(spec, opts.PinPath); err != nil {
			return nil, err
		}
		replacements, err := adoptMaps(spec, d.mapDir())
		if err != nil {
			return nil, err
		}
		collOpts.MapReplacements = replacements
		d.adopted = len(replacements) > 0
		d.migrating = earlierLayout(opts.PinPath)
		defer func() {
			for _, m := range replacements {
				m.Close()
			}
		}()
	}

	if err := d.loadObjects(spec, collOpts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load XDP program: the kernel's verifier refused it: %+v", ve)
		}
		if memlockErr != nil {
			return nil, fmt.Errorf("load XDP program: %w (RLIMIT_MEMLOCK could not be raised: %v; "+
				"on kernels before 5.11 hbf needs CAP_SYS_RESOURCE)", err, memlockErr)
		}
		return nil, fmt.Errorf("load XDP program: %w", err)
	}
	if d.filter, err = openFilter(d.objs.BlockFilter); err != nil {
		d.objs.Close()
		return nil, err
	}
	if d.migrating != "" && !d.adopted {
		// Into the new maps before they are pinned: a crash half-way leaves
		// the earlier layout whole, and the next start migrates again.
		if err := d.copyState(d.migrating); err != nil {
			d.Close()
			return nil, err
		}
	}
	if !d.adopted {
		// New maps: the filter's bits of what was copied, and a live side.
		if err := d.rebuildFilter(); err != nil {
			d.Close()
			return nil, err
		}
	}
	if d.pinDir != "" && !d.adopted {
		if err := d.pinMaps(); err != nil {
			d.Close()
			return nil, err
		}
	}
	if err := d.updatePrefixHint(); err != nil {
		d.Close()
		return nil, err
	}
	// Until told the host's prefixes: link-local neighbours are never one
	// "/64" to block together.
	if err := d.SetOnLink(nil); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// loadObjects loads the maps, the variables and the build of the program
// for this hook: the other build is never loaded, nor checked by the
// verifier.
func (d *Dataplane) loadObjects(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	name := d.hook.program()
	for n := range spec.Programs {
		if n != name {
			delete(spec.Programs, n)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, *opts)
	if err != nil {
		return err
	}
	defer coll.Close()
	all := maps.Clone(coll.Maps)
	if err := coll.Assign(&d.objs.shared); err != nil {
		return err
	}
	var globals []*ebpf.Map
	for n := range coll.Maps {
		globals = append(globals, coll.DetachMap(n)) // the global variables': kept for copies
	}
	d.objs.Program = coll.DetachProgram(name)
	d.objs.spec, d.objs.maps, d.objs.globals, d.objs.formerIDs = spec, all, globals, map[uint32]bool{}
	return nil
}

// loadCopy loads another copy of the program, on the same maps: the
// kernel attaches one program once to a TCX chain, and moving hbf in the
// chain without a gap takes a second one.
func (d *Dataplane) loadCopy() (*ebpf.Program, error) {
	coll, err := ebpf.NewCollectionWithOptions(d.objs.spec, ebpf.CollectionOptions{MapReplacements: d.objs.maps})
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	return coll.DetachProgram(d.hook.program()), nil
}

func (d *Dataplane) mapDir() string { return filepath.Join(d.pinDir, "maps") }

// linkDir holds the links of the hook this program runs at: an XDP link
// never has a TC program swapped in, nor a TCX link an XDP one.
func (d *Dataplane) linkDir() string { return filepath.Join(d.pinDir, linkDirs[d.hook]) }

// linkDirs are the folders of each hook's pinned links.
var linkDirs = map[Hook]string{HookXDP: "links", HookTCX: "tcx-links"}

// Hook is where this program decides.
func (d *Dataplane) Hook() Hook { return d.hook }

// Own reports whether the program of kernel id is this Dataplane's: the
// program, or a copy it replaced that a link may still run.
func (d *Dataplane) Own(id uint32) bool { return id == d.ProgramID() || d.objs.formerIDs[id] }

// ProgramID is the kernel's id of this program; 0 when it cannot be read.
func (d *Dataplane) ProgramID() uint32 {
	info, err := d.objs.Program.Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return uint32(id)
}

// Capacity is how many entries the block maps hold.
func (d *Dataplane) Capacity() Capacity {
	return Capacity{Blocks: int(d.objs.Blocks4.MaxEntries()), BlockPrefixes: int(d.objs.BlockPrefixes.MaxEntries())}
}

// Adopted reports whether Load reused maps pinned by an earlier process.
func (d *Dataplane) Adopted() bool { return d.adopted }

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
	}
	return nil, fmt.Errorf("no map %q", name)
}

// SetSettings changes the program's knobs; packets see the new values at once.
func (d *Dataplane) SetSettings(s Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	cfg := hbfConfig{
		MaxPorts: uint32(s.MaxPorts),
		WindowMs: uint32(s.Window.Milliseconds()),
		BlockNs:  uint64(s.BlockDuration.Nanoseconds()),

		MaxBlocksPerMin: uint32(s.MaxBlocksPerMinute),
		HashKey:         d.hashKey,
		V6PrefixLen:     uint8(s.IPv6ScanPrefix),
		EphemeralLo:     s.Ephemeral[0],
		EphemeralHi:     s.Ephemeral[1],
	}
	if s.Monitor {
		cfg.Flags |= uint32(hbfConfigFlagsCONFIG_MONITOR)
	}
	switch s.UDPScans {
	case UDPOff:
		cfg.Flags |= uint32(hbfConfigFlagsCONFIG_UDP_OFF)
	case UDPReport:
		cfg.Flags |= uint32(hbfConfigFlagsCONFIG_UDP_REPORT)
	}
	if s.CountClosed {
		cfg.Flags |= uint32(hbfConfigFlagsCONFIG_COUNT_CLOSED)
	}
	// The ports first: a new threshold must not meet the old exemptions.
	if err := d.objs.HbfIgnoredTcp.Set(s.IgnorePorts.Bits(ports.TCP)); err != nil {
		return fmt.Errorf("write ignored TCP ports: %w", err)
	}
	if err := d.objs.HbfIgnoredUdp.Set(s.IgnorePorts.Bits(ports.UDP)); err != nil {
		return fmt.Errorf("write ignored UDP ports: %w", err)
	}
	if err := d.objs.HbfConfig.Set(cfg); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}

// Close releases the process's handles. Pinned maps and links stay, and with
// them enforcement; Unpin removes them.
func (d *Dataplane) Close() error {
	return errors.Join(d.filter.close(), d.objs.Close())
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
