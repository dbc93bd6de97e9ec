package dataplane

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// XDPMode says how the program is attached to an interface.
type XDPMode string

const (
	// XDPAuto tries the driver's native XDP and falls back to generic.
	XDPAuto XDPMode = "auto"
	// XDPNative runs in the driver, before the kernel allocates an skb.
	XDPNative XDPMode = "native"
	// XDPGeneric runs after skb allocation: any driver, same verdicts, slower.
	XDPGeneric XDPMode = "generic"
	// XDPAdopted: the link an earlier process pinned now runs this program;
	// it kept the mode it was attached with.
	XDPAdopted XDPMode = "adopted"
	// ModeTCX: attached at TC ingress through TCX (HookTCX), not at XDP.
	ModeTCX XDPMode = "tcx"
)

// ParseXDPMode accepts auto, native and generic.
func ParseXDPMode(s string) (XDPMode, error) {
	switch m := XDPMode(s); m {
	case XDPAuto, XDPNative, XDPGeneric:
		return m, nil
	}
	return "", fmt.Errorf("%q is not an XDP mode: use auto, native or generic", s)
}

// Attachment is the program attached to one interface through a bpf_link,
// which no other tool can replace behind hbf's back.
type Attachment struct {
	Iface   string
	Ifindex int
	Mode    XDPMode
	link    link.Link
	pin     string
}

// Attach attaches the program to the named interface. With pinning, the link
// is pinned, and a link an earlier process pinned for the interface gets this
// program swapped in atomically (no moment without a filter).
func (d *Dataplane) Attach(iface string, mode XDPMode) (*Attachment, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", iface, err)
	}
	if err := checkFraming(iface); err != nil {
		return nil, err
	}
	a := &Attachment{Iface: iface, Ifindex: ifc.Index}

	if d.pinDir != "" {
		a.pin = filepath.Join(d.linkDir(), iface)
		ok, err := d.adoptLink(a)
		if err == nil && !ok {
			ok, err = d.adoptEarlierLink(a)
		}
		if err != nil || ok {
			return a, err
		}
	}

	a.link, a.Mode, err = d.attachMode(ifc.Index, mode)
	if (errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST)) && d.replaceForeign {
		what, derr := detachForeign(ifc.Index)
		if derr != nil {
			return nil, fmt.Errorf("attach to %s: replace the XDP program already there: %w", iface, derr)
		}
		d.replaced = append(d.replaced, iface+": "+what)
		a.link, a.Mode, err = d.attachMode(ifc.Index, mode)
	}
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
		return nil, foreignXDP(ifc.Index, iface, d.replaceForeign, err)
	}
	if err != nil {
		return nil, fmt.Errorf("attach to %s in %s mode: %w", iface, a.Mode, err)
	}

	if a.pin != "" {
		if err := os.MkdirAll(d.linkDir(), 0o700); err != nil {
			a.link.Close()
			return nil, fmt.Errorf("create pin folder: %w", err)
		}
		if err := a.link.Pin(a.pin); err != nil {
			a.link.Close()
			return nil, fmt.Errorf("pin link for %s: %w", iface, err)
		}
	}
	return a, nil
}

// attachMode attaches in mode; auto tries native, then generic when the
// driver has no native XDP.
func (d *Dataplane) attachMode(ifindex int, mode XDPMode) (link.Link, XDPMode, error) {
	if d.hook == HookTCX {
		l, err := d.attachTCX(ifindex)
		return l, ModeTCX, err
	}
	switch mode {
	case XDPNative, XDPGeneric:
		l, err := d.attachXDP(ifindex, mode)
		return l, mode, err
	case XDPAuto:
		l, err := d.attachXDP(ifindex, XDPNative)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ERANGE) {
			l, err = d.attachXDP(ifindex, XDPGeneric)
			return l, XDPGeneric, err
		}
		return l, XDPNative, err
	}
	return nil, mode, fmt.Errorf("unknown XDP mode %q", mode)
}

func (d *Dataplane) attachXDP(ifindex int, mode XDPMode) (link.Link, error) {
	flags := link.XDPDriverMode
	if mode == XDPGeneric {
		flags = link.XDPGenericMode
	}
	prog, err := d.program()
	if err != nil {
		return nil, err
	}
	return link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
}

// attachTCX puts the program at the head of the interface's TC ingress
// programs, where one that redirects or drops cannot hide traffic from
// hbf; at the tail when asked (Options.TCXTail).
func (d *Dataplane) attachTCX(ifindex int) (link.Link, error) {
	prog, err := d.program()
	if err != nil {
		return nil, err
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog,
		Attach: ebpf.AttachTCXIngress, Anchor: d.tcxAnchor()})
	if errors.Is(err, ebpf.ErrNotSupported) {
		return nil, fmt.Errorf("TCX needs Linux 6.6 or later, and this kernel is %s: use the XDP hook (%w)", kernelRelease(), err)
	}
	return l, err
}

func (d *Dataplane) tcxAnchor() link.Anchor {
	if d.tcxTail {
		return link.Tail()
	}
	return link.Head()
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// linkIfindex is the interface a link attaches to; 0 once it is detached.
func linkIfindex(info *link.Info) int {
	switch {
	case info.XDP() != nil:
		return int(info.XDP().Ifindex)
	case info.TCX() != nil:
		return int(info.TCX().Ifindex)
	}
	return 0
}

// adoptLink swaps this program into a link pinned for the interface.
func (d *Dataplane) adoptLink(a *Attachment) (bool, error) {
	l, err := link.LoadPinnedLink(a.pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open pinned link %s: %w", a.pin, err)
	}
	info, err := l.Info()
	if err == nil && linkIfindex(info) != a.Ifindex {
		// The interface was re-created: the old link is bound to a dead index.
		err = unix.ENOLINK
	}
	if err == nil {
		var prog *ebpf.Program
		if prog, err = d.program(); err == nil {
			err = l.Update(prog)
		}
	}
	if errors.Is(err, unix.ENOLINK) {
		// Defunct link (its interface went away): start afresh.
		l.Close()
		if err := os.Remove(a.pin); err != nil {
			return false, fmt.Errorf("remove defunct link pin: %w", err)
		}
		return false, nil
	}
	if err != nil {
		l.Close()
		return false, fmt.Errorf("swap program into pinned link %s: %w", a.pin, err)
	}
	a.link = l
	a.Mode = XDPAdopted
	return true, nil
}

// RetireOtherHook removes the link the other hook's program holds on
// iface under this pin path, if any: once this program is attached, a
// change of hook between two runs ends the old one's enforcement there,
// never before. Migrating from an earlier layout, the earlier layout's
// link of the other hook goes the same way. It reports whether there was
// one.
func (d *Dataplane) RetireOtherHook(iface string) (bool, error) {
	if d.pinDir == "" {
		return false, nil
	}
	var pins []string
	for h, dir := range linkDirs {
		if h != d.hook {
			pins = append(pins, filepath.Join(d.pinDir, dir, iface))
		}
	}
	if d.migrating != "" {
		for h, dir := range linkDirs {
			if h != d.hook {
				pins = append(pins, filepath.Join(d.migrating, dir, iface))
			}
		}
	}
	retired := false
	for _, pin := range pins {
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return retired, fmt.Errorf("open the link pinned at %s: %w", pin, err)
		}
		err = l.Unpin() // the last reference: closing it detaches
		l.Close()
		if err != nil {
			return retired, fmt.Errorf("unpin %s: %w", pin, err)
		}
		retired = true
	}
	return retired, nil
}

// Detach removes the program from the interface.
func (a *Attachment) Detach() error {
	if a.link == nil {
		return nil // lost with its interface; CheckAttachment had not replaced it yet
	}
	if a.pin != "" {
		if err := a.link.Unpin(); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unpin link for %s: %w", a.Iface, err)
		}
	}
	if err := a.link.Close(); err != nil {
		return fmt.Errorf("detach from %s: %w", a.Iface, err)
	}
	return nil
}

// Release closes this process's handle; a pinned link stays attached.
func (a *Attachment) Release() error {
	if a.link == nil {
		return nil
	}
	return a.link.Close()
}

// checkFraming refuses interfaces whose frames do not start with an Ethernet
// header: on a layer-3 device (tun, WireGuard, IP tunnels) the parser would
// read the IP header as MAC addresses and let every packet through.
func checkFraming(iface string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("interface %q: %w", iface, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		return fmt.Errorf("interface %q: %w", iface, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFHWADDR, ifr); err != nil {
		return fmt.Errorf("interface %q: read its link type: %w", iface, err)
	}
	switch typ := ifr.Uint16(); typ {
	case unix.ARPHRD_ETHER, unix.ARPHRD_LOOPBACK:
		return nil
	default:
		return fmt.Errorf("interface %q carries no Ethernet header (link type %d): hbf parses Ethernet frames only; "+
			"attach it to the Ethernet interface this traffic arrives on", iface, typ)
	}
}
