package daemon

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hbf-firewall/hbf/internal/hostnet"
)

// hostRecheck is how often the host's view is read again without a
// notification: resolv.conf changes are not notified, and notifications
// can be lost.
const hostRecheck = 2 * time.Second

// hostSnapshot is the host's addresses, gateways and resolvers now.
func (d *daemon) hostSnapshot() hostnet.Snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.host
}

// followHost keeps the never-block entries and the on-link prefixes in step
// with the host: an address added, a gateway changed, a resolver edited in
// are protected within moments, and an address removed stops being.
func (d *daemon) followHost(ctx context.Context) {
	follow(ctx, hostRecheck, d.hostChanges.C(), func() {
		d.log.Warn("host changes are no longer notified; reading them every few seconds instead")
	}, d.refreshHost)
}

// follow calls refresh each time changed says so, and every interval,
// until ctx ends: some changes are never notified (resolv.conf, IPVS), and
// notifications can be lost. Once changed is closed, lost (if not nil) is
// told, and the interval alone goes on.
func follow(ctx context.Context, every time.Duration, changed <-chan struct{}, lost func(), refresh func()) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changed:
			if !ok {
				if lost != nil {
					lost()
				}
				changed = nil
				continue
			}
		case <-tick.C:
		}
		refresh()
	}
}

func (d *daemon) refreshHost() {
	d.reloadMu.Lock() // a reload computes the allowlist from the snapshot too
	defer d.reloadMu.Unlock()
	d.mu.Lock()
	set, prev := d.live, d.host
	d.mu.Unlock()
	next, err := hostnet.Read(set.ResolvConf)
	if err != nil {
		if msg := err.Error(); msg != d.hostErr { // once per problem, not every 2 s
			d.hostErr = msg
			d.log.Warn("cannot read the host's addresses; the never-block list stays as it was", "err", err)
		}
		return
	}
	d.hostErr = ""
	if next.Equal(prev) {
		return
	}
	d.mu.Lock()
	d.host = next
	d.mu.Unlock()
	// Protect before unprotecting: the new entries and prefixes go in first.
	if err := d.k.SetOnLink(next.Prefixes); err != nil {
		d.log.Error("cannot update the on-link prefixes", "err", err)
	}
	if err := d.k.SetLocalAddrs(next.Addrs); err != nil {
		d.log.Error("cannot update the host's addresses in the kernel; closed ports are judged on the old ones", "err", err)
	}
	if err := d.state.SetPolicy(set.Rules, d.protectedBase(set, next)); err != nil {
		d.log.Error("cannot update the never-block list in the kernel", "err", err)
	}
	d.log.Info("the host's network changed; the never-block list follows",
		"addresses", diff(prev.Addrs, next.Addrs), "gateways", diff(prev.Gateways, next.Gateways),
		"resolvers", diff(prev.Resolvers, next.Resolvers), "on_link", diff(prev.Prefixes, next.Prefixes))
}

// diff says what was added (+) and removed (-) between two sorted lists.
func diff[T interface {
	comparable
	String() string
}](prev, next []T) []string {
	var out []string
	for _, v := range next {
		if !slices.Contains(prev, v) {
			out = append(out, "+"+v.String())
		}
	}
	for _, v := range prev {
		if !slices.Contains(next, v) {
			out = append(out, "-"+v.String())
		}
	}
	return out
}

// linuxEphemeral is Linux's default ephemeral port range, for a host whose
// own cannot be read.
var linuxEphemeral = [2]uint16{32768, 60999}

// ephemeralPorts is the host's ephemeral port range, read again at every
// start and reload: late answers into it never count.
func (d *daemon) ephemeralPorts() [2]uint16 {
	r, err := hostnet.EphemeralPorts(hostnet.EphemeralPortsFile)
	if err != nil {
		d.log.Warn("cannot read the ephemeral port range; late answers are judged against Linux's default",
			"default", fmt.Sprintf("%d-%d", linuxEphemeral[0], linuxEphemeral[1]), "err", err)
		return linuxEphemeral
	}
	return r
}
