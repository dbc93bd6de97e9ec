package dataplane

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrForeignXDP: another XDP program holds the interface.
var ErrForeignXDP = errors.New("another XDP program is attached")

// ForeignXDPError is Attach's refusal when another tool's XDP program holds
// the interface: it was not asked to detach it, or (Replacing) it tried and
// the hook stayed taken.
type ForeignXDPError struct {
	Iface     string
	Replacing bool  // Options.ReplaceForeign was set
	Err       error // the kernel's refusal
	// Program names what holds the hook: "xdp_dispatcher (id 12)"; the id
	// alone when the name cannot be read (without CAP_SYS_ADMIN).
	Program string
	// OtherHBF is the pin path of another hbf whose program holds the
	// interface; "" when the program is not hbf's, or its pins are not
	// found on /sys/fs/bpf.
	OtherHBF string
}

// foreignXDP describes the refusal to attach to iface, whose XDP hook
// another program holds.
func foreignXDP(ifindex int, iface string, replacing bool, err error) *ForeignXDPError {
	fe := &ForeignXDPError{Iface: iface, Replacing: replacing, Err: err}
	if id, _ := xdpProgramOn(ifindex); id != 0 {
		name := programName(id)
		fe.Program = fmt.Sprintf("id %d", id)
		if name != "" {
			fe.Program = fmt.Sprintf("%s (id %d)", name, id)
		}
		if name == hbfProgHbfXdp {
			fe.OtherHBF = otherHBF(id, iface)
		}
	}
	return fe
}

// what names the program in a message.
func (e *ForeignXDPError) what() string {
	if e.Program == "" {
		return "another XDP program"
	}
	return "program " + e.Program
}

func (e *ForeignXDPError) Error() string {
	if e.Replacing {
		return fmt.Sprintf("attach to %s: %v (%s) and could not be detached (see `ip link show %s`): "+
			"another tool's bpf_link can be detached only with CAP_SYS_ADMIN: %v", e.Iface, ErrForeignXDP, e.what(), e.Iface, e.Err)
	}
	return fmt.Sprintf("attach to %s: %v (%s; see `ip link show %s`): an XDP hook holds one program: %v",
		e.Iface, ErrForeignXDP, e.what(), e.Iface, e.Err)
}

func (e *ForeignXDPError) Unwrap() []error { return []error{ErrForeignXDP, e.Err} }

// otherHBF finds the pin path of the hbf whose XDP link pinned for iface
// runs program id, an hbf_xdp that holds the interface: another daemon
// with another --pin-path. "" when no pin of it is found.
func otherHBF(id uint32, iface string) string {
	for _, pattern := range []string{"*", "*/*"} {
		pins, _ := filepath.Glob(filepath.Join(DefaultBPFFS, pattern, "v*", linkDirs[HookXDP], iface))
		for _, pin := range pins {
			if ownXDP(pin, id) {
				return filepath.Dir(filepath.Dir(filepath.Dir(pin)))
			}
		}
	}
	return ""
}

// detachForeign removes whatever XDP program holds the interface: a bpf_link
// (BPF_LINK_DETACH; its owner keeps a defunct link), else a program attached
// through netlink, in either mode. It says what it removed.
//
// Links are listed system-wide and say only their ifindex, which repeats
// across network namespaces: a link is the interface's only if it also runs
// the program netlink reports on the interface in this namespace.
func detachForeign(ifindex int) (string, error) {
	progID, err := xdpProgramOn(ifindex)
	if err != nil {
		return "", err
	}
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil || info.Type != link.XDPType || info.XDP() == nil ||
			int(info.XDP().Ifindex) != ifindex || uint32(info.Program) != progID {
			continue
		}
		if err := it.Link.Detach(); err != nil {
			return "", fmt.Errorf("detach bpf_link %d: %w", it.ID, err)
		}
		return fmt.Sprintf("bpf_link %d (program %d)", it.ID, info.Program), nil
	}
	// Listing links needs CAP_SYS_ADMIN; without it only a program attached
	// through netlink can be replaced, and the attach after says so if the
	// interface is still held.
	if err := it.Err(); err != nil && !errors.Is(err, unix.EPERM) {
		return "", fmt.Errorf("list bpf links: %w", err)
	}
	for _, mode := range []uint32{unix.XDP_FLAGS_DRV_MODE, unix.XDP_FLAGS_SKB_MODE} {
		if err := netlinkDetachXDP(ifindex, mode); err != nil {
			return "", err
		}
	}
	return "a program attached through netlink", nil
}

// xdpProgramOn asks rtnetlink which XDP program runs on the interface of
// this network namespace; 0: none.
func xdpProgramOn(ifindex int) (uint32, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return 0, fmt.Errorf("no interface with index %d: %w", ifindex, err)
	}
	if xdp := l.Attrs().Xdp; xdp != nil && xdp.Attached {
		return xdp.ProgId, nil
	}
	return 0, nil
}

// netlinkDetachXDP detaches the program attached through netlink in mode
// (IFLA_XDP with fd -1): what `ip link set DEV xdp off` does. Without a
// program in that mode it is a no-op.
func netlinkDetachXDP(ifindex int, mode uint32) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err == nil {
		err = netlink.LinkSetXdpFdWithFlags(l, -1, int(mode))
	}
	if err != nil {
		return fmt.Errorf("netlink XDP detach: %w", err)
	}
	return nil
}

// Replaced lists the foreign programs Attach detached (Options.ReplaceForeign).
func (d *Dataplane) Replaced() []string { return d.replaced }

// ForeignXDP names the first of ifaces whose XDP hook holds a program other
// than one hbf pinned under pinPath (in this network namespace), with that
// program's id; "" when every hook is free or hbf's own. It is what
// choosing a hook automatically needs to know.
func ForeignXDP(ifaces []string, pinPath string) (string, uint32, error) {
	for _, name := range ifaces {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return "", 0, fmt.Errorf("interface %q: %w", name, err)
		}
		xdp := l.Attrs().Xdp
		if xdp == nil || !xdp.Attached || ownXDP(filepath.Join(pinPath, layoutVersion, linkDirs[HookXDP], name), xdp.ProgId) {
			continue
		}
		return name, xdp.ProgId, nil
	}
	return "", 0, nil
}

// ownXDP reports whether the link pinned at pin runs program id.
func ownXDP(pin string, id uint32) bool {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return false
	}
	defer l.Close()
	info, err := l.Info()
	return err == nil && uint32(info.Program) == id
}

// ProgramRef names a program attached to an interface.
type ProgramRef struct {
	ID   uint32
	Name string // as the kernel knows it; "" when it cannot be read
}

// Chain is what runs on an interface's ingress, in the order it runs: the
// XDP hook's program, then the TCX programs at TC ingress.
type Chain struct {
	XDP *ProgramRef
	TCX []ProgramRef
}

// ChainOf reads the chain of the named interface in this namespace.
func ChainOf(iface string) (Chain, error) {
	var c Chain
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return c, fmt.Errorf("interface %q: %w", iface, err)
	}
	if xdp := l.Attrs().Xdp; xdp != nil && xdp.Attached {
		c.XDP = &ProgramRef{ID: xdp.ProgId, Name: programName(xdp.ProgId)}
	}
	ids, err := tcxPrograms(l.Attrs().Index)
	if errors.Is(err, ebpf.ErrNotSupported) {
		return c, nil // no TCX on this kernel: nothing runs there
	}
	if err != nil {
		return c, fmt.Errorf("query the TCX programs of %s: %w", iface, err)
	}
	for _, id := range ids {
		c.TCX = append(c.TCX, ProgramRef{ID: id, Name: programName(id)})
	}
	return c, nil
}

// tcxPrograms are the ids of the programs at TC ingress of ifindex
// through TCX, in the order they run.
func tcxPrograms(ifindex int) ([]uint32, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return nil, err
	}
	ids := make([]uint32, len(res.Programs))
	for i, p := range res.Programs {
		ids[i] = uint32(p.ID)
	}
	return ids, nil
}

func programName(id uint32) string {
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return ""
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return ""
	}
	return info.Name
}
