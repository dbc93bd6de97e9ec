package daemon

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
)

// watchdogEvery is how often the daemon checks that its program is attached
// and its pins are in place.
const watchdogEvery = time.Second

// watchdog notices what is undone from outside (the program detached, the
// interface removed and re-created, pins deleted), repairs it, counts it in
// hbf_repairs_total and logs it.
func (d *daemon) watchdog(ctx context.Context) {
	tick := time.NewTicker(watchdogEvery)
	defer tick.Stop()
	failing := map[string]string{} // interface -> the problem last logged
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		d.checkAttachments(failing)
	}
}

func (d *daemon) checkAttachments(failing map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	mode := d.start.XDPMode
	for _, a := range d.attachments {
		oldIndex := a.Ifindex
		kind, err := d.dp.CheckAttachment(a, mode)
		if err != nil {
			// Logged when the problem changes, not every second.
			if msg := err.Error(); failing[a.Iface] != msg {
				failing[a.Iface] = msg
				if errors.Is(err, dataplane.ErrInterfaceGone) {
					d.log.Warn("the interface is gone; hbf attaches again when it comes back", "iface", a.Iface)
				} else {
					d.log.Error("hbf is not attached and cannot attach again; retrying every second", "iface", a.Iface, "err", attachError(err))
				}
			}
			continue
		}
		delete(failing, a.Iface)
		if kind == "" {
			continue
		}
		d.repairs[kind]++
		delete(d.ifnames, oldIndex)
		d.ifnames[a.Ifindex] = a.Iface
		switch kind {
		case dataplane.RepairInterface:
			d.log.Warn("the interface was re-created; hbf attached again", "iface", a.Iface, "ifindex", a.Ifindex, "xdp_mode", a.Mode)
		default:
			d.log.Warn("hbf's program was detached from outside; attached again", "iface", a.Iface, "xdp_mode", a.Mode)
		}
	}
	n, err := d.dp.RepairPins(d.attachments)
	if n > 0 {
		d.repairs[dataplane.RepairPin] += uint64(n)
		d.log.Warn("pins were removed from outside; pinned again", "pin_path", d.start.PinPath, "pins", n)
	}
	if err != nil {
		if msg := err.Error(); failing["pins"] != msg {
			failing["pins"] = msg
			d.log.Error("cannot pin again what was removed", "err", err)
		}
	} else {
		delete(failing, "pins")
	}
}

// repairCounts is hbf_repairs_total by kind.
func (d *daemon) repairCounts() map[string]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.repairs)
}
