package dataplane

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// What CheckAttachment and RepairPins fix, as hbf_repairs_total's kind.
const (
	RepairLink      = "link"      // the program was detached from outside
	RepairInterface = "interface" // the interface was removed and re-created
	RepairPin       = "pin"       // a pin was removed from outside
	// RepairHead: another program was put ahead of hbf at TC ingress, where
	// it could hide traffic from it; hbf moved back to the head.
	RepairHead = "head"
)

// ErrInterfaceGone: the attachment's interface does not exist now.
var ErrInterfaceGone = errors.New("interface gone")

// CheckAttachment verifies that the program still runs on a's interface
// through a's link, and attaches it again when it does not: its link was
// detached from outside (bpftool link detach), or its interface was removed
// and re-created. mode is the mode to attach with. It returns what it
// repaired ("" when all was well); ErrInterfaceGone while the interface is
// missing.
func (d *Dataplane) CheckAttachment(a *Attachment, mode XDPMode) (string, error) {
	ifc, err := net.InterfaceByName(a.Iface)
	if err != nil {
		return "", fmt.Errorf("%s: %w", a.Iface, ErrInterfaceGone)
	}
	on := 0
	if a.link != nil {
		if info, err := a.link.Info(); err == nil {
			on = linkIfindex(info)
		}
	}
	if on != 0 && on == ifc.Index {
		return d.keepHead(a)
	}
	kind := RepairLink
	if ifc.Index != a.Ifindex {
		kind = RepairInterface
	}
	// The link is dead (detached: its interface is 0): drop it and its pin.
	if a.link != nil {
		a.link.Close()
		a.link = nil
	}
	if a.pin != "" {
		if err := os.Remove(a.pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("remove the dead link's pin: %w", err)
		}
	}
	fresh, err := d.Attach(a.Iface, mode)
	if err != nil {
		return "", err
	}
	*a = *fresh
	return kind, nil
}

// RepairPins pins again what was unpinned from outside: the state maps,
// the links of atts and the connection tracer's. Enforcement never depended on the pins while this
// process runs; the next start does, to find the state. It returns how
// many pins it restored.
func (d *Dataplane) RepairPins(atts []*Attachment) (int, error) {
	if d.pinDir == "" {
		return 0, nil
	}
	n := 0
	var errs []error
	for _, name := range pinnedMaps {
		if _, err := os.Stat(filepath.Join(d.mapDir(), name)); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := d.pinMap(name); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	for _, a := range atts {
		if a.pin == "" || a.link == nil {
			continue
		}
		if _, err := os.Stat(a.pin); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		err := os.MkdirAll(d.linkDir(), 0o700)
		if err == nil {
			_ = a.link.Unpin()
			err = a.link.Pin(a.pin)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pin link of %s again: %w", a.Iface, err))
			continue
		}
		n++
	}
	if ok, err := d.repinTracer(); err != nil {
		errs = append(errs, err)
	} else if ok {
		n++
	}
	return n, errors.Join(errs...)
}

// repinTracer pins the connection tracer's link again when it runs and
// its pin was removed; it reports whether it did.
func (d *Dataplane) repinTracer() (bool, error) {
	d.limitMu.Lock()
	defer d.limitMu.Unlock()
	pin := d.tracerPin()
	if d.tracer == nil || pin == "" {
		return false, nil
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	err := os.MkdirAll(d.pinDir, 0o700)
	if err == nil {
		_ = d.tracer.Unpin()
		err = d.tracer.Pin(pin)
	}
	if err != nil {
		return false, fmt.Errorf("pin the connection tracer again: %w", err)
	}
	return true, nil
}

// keepHead moves a TCX attachment back to the head of TC ingress when
// another program was put ahead of it. The kernel attaches a program once
// to a chain, so a second copy of it, on the same maps, is attached at the
// head before the old link goes: for a moment both decide, and no packet
// passes unseen.
func (d *Dataplane) keepHead(a *Attachment) (string, error) {
	if d.hook != HookTCX || d.tcxTail {
		return "", nil
	}
	ids, err := tcxPrograms(a.Ifindex)
	if err != nil {
		return "", fmt.Errorf("query the TCX programs of %s: %w", a.Iface, err)
	}
	if len(ids) == 0 || d.Own(ids[0]) {
		return "", nil
	}
	prog, err := d.loadCopy()
	if err != nil {
		return "", fmt.Errorf("move back to the head of %s: load a copy of the program: %w", a.Iface, err)
	}
	fresh, err := link.AttachTCX(link.TCXOptions{Interface: a.Ifindex, Program: prog,
		Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
	if err != nil {
		prog.Close()
		return "", fmt.Errorf("move back to the head of %s: %w", a.Iface, err)
	}
	old := a.link
	if a.pin != "" {
		// Unpinned, the old link still runs while this process holds it.
		if err := old.Unpin(); err != nil && !errors.Is(err, os.ErrNotExist) {
			fresh.Close()
			prog.Close()
			return "", fmt.Errorf("unpin the link of %s: %w", a.Iface, err)
		}
		if err := fresh.Pin(a.pin); err != nil {
			fresh.Close()
			prog.Close()
			_ = old.Pin(a.pin)
			return "", fmt.Errorf("pin the link of %s: %w", a.Iface, err)
		}
	}
	old.Close()
	// Other interfaces may still run the old copy: it is hbf's all the same.
	d.objs.formerIDs[d.ProgramID()] = true
	d.objs.Program.Close()
	d.objs.Program = prog
	a.link = fresh
	a.Mode = ModeTCX
	return RepairHead, nil
}
