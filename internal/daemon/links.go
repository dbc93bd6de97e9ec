package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/metrics"
)

// watchdogEvery is how often the daemon checks that its program is attached
// and its pins are in place.
const watchdogEvery = time.Second

// links is the program on the protected interfaces: attached at start,
// kept attached by the watchdog, released or detached at the stop.
type links struct {
	dp      *dataplane.Dataplane
	mode    dataplane.XDPMode
	pinPath string
	log     *slog.Logger

	mu          sync.Mutex
	attachments []*dataplane.Attachment
	ifnames     map[int]string    // by ifindex, for the events
	repairs     map[string]uint64 // what the watchdog repaired, by kind
}

func newLinks(dp *dataplane.Dataplane, start Start, log *slog.Logger) *links {
	return &links{dp: dp, mode: start.XDPMode, pinPath: start.PinPath, log: log,
		ifnames: map[int]string{}, repairs: map[string]uint64{}}
}

// attach attaches the program to each interface; the first refusal stops
// it, leaving what it attached for abandon.
func (l *links) attach(ifaces []string) error {
	for _, name := range ifaces {
		a, err := l.dp.Attach(name, l.mode)
		if err != nil {
			return attachError(err)
		}
		l.mu.Lock()
		l.attachments = append(l.attachments, a)
		l.ifnames[a.Ifindex] = a.Iface
		l.mu.Unlock()
		l.log.Info("protecting interface", "iface", a.Iface, "hook", l.dp.Hook(), "xdp_mode", a.Mode)
	}
	return nil
}

// attachError says what to do about an interface another XDP program holds.
func attachError(err error) error {
	fe, ok := errors.AsType[*dataplane.ForeignXDPError](err)
	switch {
	case !ok:
		return err
	case fe.OtherHBF != "":
		return fmt.Errorf("attach to %s: %w: another hbf runs there, with its pins in %s: stop it first (or uninstall it: "+
			"hbf uninstall --pin-path %s), or start this one with --pin-path %s to take its place and its state: %v",
			fe.Iface, dataplane.ErrForeignXDP, fe.OtherHBF, fe.OtherHBF, fe.OtherHBF, fe.Err)
	case fe.Replacing:
		return fmt.Errorf("attach to %s: %w (program %s) and --replace could not detach it (see `ip link show %s`): "+
			"another tool's bpf_link can be detached only with CAP_SYS_ADMIN; --attach tcx runs beside it: %v",
			fe.Iface, dataplane.ErrForeignXDP, fe.Program, fe.Iface, fe.Err)
	default:
		return fmt.Errorf("attach to %s: %w (program %s; see `ip link show %s`): an XDP hook holds one program; "+
			"start hbf with --attach tcx to run beside it at TC, or remove that program, or start hbf with --replace to detach it: %v",
			fe.Iface, dataplane.ErrForeignXDP, fe.Program, fe.Iface, fe.Err)
	}
}

// detach removes the program from every interface.
func (l *links) detach() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.attachments {
		if err := a.Detach(); err != nil {
			l.log.Error("detach failed", "iface", a.Iface, "err", err)
			continue
		}
		l.log.Info("detached", "iface", a.Iface)
	}
	l.attachments = nil
}

// release closes this process's handles; the pinned links stay attached.
func (l *links) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.attachments {
		_ = a.Release()
	}
	l.attachments = nil
}

// abandon gives up a failed start: it detaches what it attached and leaves
// adopted links as it found them, attached.
func (l *links) abandon() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.attachments {
		if a.Mode == dataplane.XDPAdopted {
			_ = a.Release()
		} else {
			_ = a.Detach()
		}
	}
	l.attachments = nil
}

// ifname names the interface of index, as the events carry it.
func (l *links) ifname(index int) string {
	l.mu.Lock()
	name, ok := l.ifnames[index]
	l.mu.Unlock()
	if ok {
		return name
	}
	if ifc, err := net.InterfaceByIndex(index); err == nil {
		return ifc.Name
	}
	return ""
}

// interfaces are the attachments as status shows them.
func (l *links) interfaces() []api.Interface {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []api.Interface
	for _, a := range l.attachments {
		i := api.Interface{Name: a.Iface, Hook: string(l.dp.Hook()), Mode: string(a.Mode)}
		// Read where the interface lives: this namespace, as the daemon's.
		if c, err := dataplane.ChainOf(a.Iface); err == nil {
			ref := func(p dataplane.ProgramRef) api.Program {
				return api.Program{ID: p.ID, Name: p.Name, HBF: l.dp.Own(p.ID)}
			}
			if c.XDP != nil {
				p := ref(*c.XDP)
				i.XDP = &p
			}
			for _, p := range c.TCX {
				i.TCX = append(i.TCX, ref(p))
			}
		}
		out = append(out, i)
	}
	return out
}

// attached is hbf_xdp_attached.
func (l *links) attached() []metrics.Attachment {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]metrics.Attachment, len(l.attachments))
	for i, a := range l.attachments {
		out[i] = metrics.Attachment{Iface: a.Iface, Mode: string(a.Mode)}
	}
	return out
}

// repairCounts is hbf_repairs_total by kind.
func (l *links) repairCounts() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.repairs)
}

// watch notices what is undone from outside (the program detached, the
// interface removed and re-created, pins deleted), repairs it, counts it in
// hbf_repairs_total and logs it, until ctx ends.
func (l *links) watch(ctx context.Context) {
	tick := time.NewTicker(watchdogEvery)
	defer tick.Stop()
	failing := map[string]string{} // interface -> the problem last logged
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		l.check(failing)
	}
}

func (l *links) check(failing map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.attachments {
		oldIndex := a.Ifindex
		kind, err := l.dp.CheckAttachment(a, l.mode)
		if err != nil {
			// Logged when the problem changes, not every second.
			if msg := err.Error(); failing[a.Iface] != msg {
				failing[a.Iface] = msg
				if errors.Is(err, dataplane.ErrInterfaceGone) {
					l.log.Warn("the interface is gone; hbf attaches again when it comes back", "iface", a.Iface)
				} else {
					l.log.Error("hbf is not attached and cannot attach again; retrying every second", "iface", a.Iface, "err", attachError(err))
				}
			}
			continue
		}
		delete(failing, a.Iface)
		if kind == "" {
			continue
		}
		l.repairs[kind]++
		delete(l.ifnames, oldIndex)
		l.ifnames[a.Ifindex] = a.Iface
		switch kind {
		case dataplane.RepairInterface:
			l.log.Warn("the interface was re-created; hbf attached again", "iface", a.Iface, "ifindex", a.Ifindex, "xdp_mode", a.Mode)
		case dataplane.RepairHead:
			l.log.Warn("another program was put ahead of hbf at TC ingress, where it could hide traffic from it; "+
				"hbf moved back to the head", "iface", a.Iface)
		default:
			l.log.Warn("hbf's program was detached from outside; attached again", "iface", a.Iface, "xdp_mode", a.Mode)
		}
	}
	n, err := l.dp.RepairPins(l.attachments)
	if n > 0 {
		l.repairs[dataplane.RepairPin] += uint64(n)
		l.log.Warn("pins were removed from outside; pinned again", "pin_path", l.pinPath, "pins", n)
	}
	if err != nil {
		if msg := err.Error(); failing["pins"] != msg {
			failing["pins"] = msg
			l.log.Error("cannot pin again what was removed", "err", err)
		}
	} else {
		delete(failing, "pins")
	}
}

// chooseHook resolves --attach: auto takes XDP when every interface's XDP
// hook is free (or hbf's own), TCX otherwise, and says which and why.
func (d *daemon) chooseHook() (dataplane.Hook, error) {
	switch d.start.Attach {
	case AttachTCX:
		return dataplane.HookTCX, nil
	case AttachAuto:
		iface, prog, err := dataplane.ForeignXDP(d.start.Ifaces, d.start.PinPath)
		if err != nil {
			return "", fmt.Errorf("--attach auto: %w", err)
		}
		if iface != "" {
			d.log.Info("attaching through TCX: another program holds an XDP hook (--attach auto)", "iface", iface, "program", prog)
			return dataplane.HookTCX, nil
		}
		d.log.Info("attaching at XDP: every XDP hook is free (--attach auto)")
	}
	return dataplane.HookXDP, nil
}
