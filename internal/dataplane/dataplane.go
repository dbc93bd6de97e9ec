package dataplane

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

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
	// Program is verified while the maps are written to (Open): read it
	// with Dataplane.program, which waits for verified.
	Program   *ebpf.Program
	verified  chan struct{}
	verifyErr error
	// spec and maps load another copy of Program on the same maps, the
	// global variables' included (keepHead); globals are those of maps
	// no field above holds, closed with them.
	spec    *ebpf.CollectionSpec
	maps    map[string]*ebpf.Map
	globals []*ebpf.Map
	// formerIDs are earlier copies' ids, still running on links a copy
	// has not replaced yet.
	formerIDs map[uint32]bool
	// tracerSpec is the connection tracer's, loaded only while a TCP port
	// has a limit (SetLimits).
	tracerSpec *ebpf.ProgramSpec
}

// shared are the maps and the variables of every build of the program.
type shared struct {
	hbfMaps
	hbfVariables
}

func (o *objects) Close() error {
	if o.verified != nil {
		<-o.verified
	}
	if o.Program != nil {
		o.Program.Close()
	}
	err := o.hbfMaps.Close()
	for _, m := range o.globals {
		m.Close()
	}
	return err
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

	// netns is the inode number of the network namespace whose
	// connections the limits count: this process's.
	netns uint32
	// limitMu serialises SetLimits, which owns tracer and limitSlots.
	limitMu sync.Mutex
	tracer  link.Link
	// limitSlots are the ports with a limit (port | PORT_UDP) and their
	// entries in limit_counters; nil until read from the maps.
	limitSlots   map[uint32]uint32
	possibleCPUs int
}

// Load loads the program, built for opts.Hook, adopting the maps pinned under
// opts.PinPath when there are any. It does not attach the program.
func Load(opts Options) (*Dataplane, error) {
	d, err := Open(opts)
	if err != nil {
		return nil, err
	}
	if err := d.Ready(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Open is Load but for the program, which the kernel's verifier checks
// meanwhile (a quarter of a second on a 2-core machine): the maps can be
// written to at once, and Ready waits for the program. A start with a big
// list writes it while the program is verified.
func Open(opts Options) (*Dataplane, error) {
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
	if d.netns, err = netnsInode(); err != nil {
		return nil, err
	}
	if d.possibleCPUs, err = ebpf.PossibleCPU(); err != nil {
		return nil, fmt.Errorf("count the possible CPUs: %w", err)
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

	loadErr := func(err error) error {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load XDP program: the kernel's verifier refused it: %+v", ve)
		}
		if memlockErr != nil {
			return fmt.Errorf("load XDP program: %w (RLIMIT_MEMLOCK could not be raised: %v; "+
				"on kernels before 5.11 hbf needs CAP_SYS_RESOURCE)", err, memlockErr)
		}
		return fmt.Errorf("load XDP program: %w", err)
	}
	if err := d.loadObjects(spec, collOpts, loadErr); err != nil {
		return nil, loadErr(err)
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

// loadObjects loads the maps and the variables, and starts loading the
// build of the program for this hook on them: the other build is never
// loaded, nor checked by the verifier. wrap says what a failure to load
// the program means.
func (d *Dataplane) loadObjects(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions, wrap func(error) error) error {
	name := d.hook.program()
	d.objs.tracerSpec = spec.Programs[hbfProgHbfConnTracer]
	for n := range spec.Programs {
		if n != name {
			delete(spec.Programs, n)
		}
	}
	mapsOnly := *spec
	mapsOnly.Programs = nil
	coll, err := ebpf.NewCollectionWithOptions(&mapsOnly, *opts)
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
	d.objs.spec, d.objs.maps, d.objs.globals, d.objs.formerIDs = spec, all, globals, map[uint32]bool{}
	d.objs.verified = make(chan struct{})
	go func() {
		defer close(d.objs.verified)
		if d.objs.Program, err = d.loadCopy(); err != nil {
			d.objs.verifyErr = wrap(err)
		}
	}()
	return nil
}

// Ready waits until the kernel verified the program, and says why not
// when it refused it.
func (d *Dataplane) Ready() error {
	_, err := d.program()
	return err
}

// program is the program once verified.
func (d *Dataplane) program() (*ebpf.Program, error) {
	<-d.objs.verified
	return d.objs.Program, d.objs.verifyErr
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

// Hook is where this program decides.
func (d *Dataplane) Hook() Hook { return d.hook }

// Own reports whether the program of kernel id is this Dataplane's: the
// program, or a copy it replaced that a link may still run.
func (d *Dataplane) Own(id uint32) bool { return id == d.ProgramID() || d.objs.formerIDs[id] }

// ProgramID is the kernel's id of this program; 0 when it cannot be read.
func (d *Dataplane) ProgramID() uint32 {
	prog, err := d.program()
	if err != nil {
		return 0
	}
	info, err := prog.Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return uint32(id)
}

// Adopted reports whether Load reused maps pinned by an earlier process.
func (d *Dataplane) Adopted() bool { return d.adopted }

// Close releases the process's handles. Pinned maps and links stay, and with
// them enforcement; Unpin removes them.
func (d *Dataplane) Close() error {
	d.limitMu.Lock()
	if d.tracer != nil {
		d.tracer.Close()
		d.tracer = nil
	}
	d.limitMu.Unlock()
	return errors.Join(d.filter.close(), d.objs.Close())
}

// netnsInode is the inode number of this process's network namespace.
func netnsInode() (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("read this process's network namespace: %w", err)
	}
	return uint32(st.Ino), nil
}
