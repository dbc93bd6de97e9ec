package daemon

import (
	"context"
	"time"

	"github.com/hbf-firewall/hbf/internal/natports"
	"github.com/hbf-firewall/hbf/internal/ports"
)

// servedRecheck is how often the NAT rules and IPVS services are read
// again without a notification: IPVS sends none, and notifications can be
// lost.
const servedRecheck = 10 * time.Second

// servedPorts is what the host serves without sockets, as last read.
func (d *daemon) servedPorts() natports.Snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.served
}

// readServed reads the ports the host forwards (DNAT, IPVS) into the
// program, so that they never count as closed. A failure keeps what the
// program had, and is said once per problem.
func (d *daemon) readServed() {
	next, err := d.natReader.Read()
	if err != nil {
		if msg := err.Error(); msg != d.servedErr {
			d.servedErr = msg
			d.log.Warn("cannot read the host's NAT rules; the ports they forward count as closed: "+
				"name them with --ignore-ports", "err", err)
		}
		return
	}
	d.servedErr = ""
	prev := d.servedPorts()
	if next.Equal(prev) {
		return
	}
	if err := d.k.SetServed(next.Ports); err != nil {
		d.log.Error("cannot write the forwarded ports to the kernel", "err", err)
		return
	}
	d.mu.Lock()
	d.served = next
	d.mu.Unlock()
	if next.Unread != "" && next.Unread != prev.Unread {
		d.log.Warn(unreadAdvice(next))
	}
	d.log.Info("ports the host serves without a socket (DNAT, IPVS): never counted as closed",
		"ports", ports.Compact(next.Ports))
}

// unreadAdvice says what the host serves that hbf cannot read, and what
// to do about it.
func unreadAdvice(s natports.Snapshot) string {
	return s.Unread + "; name them with --ignore-ports, or move the rules to iptables-nft"
}

// followServed reads the NAT rules again when nftables changes, and every
// servedRecheck.
func (d *daemon) followServed(ctx context.Context) {
	var changed <-chan struct{}
	if ch, err := d.natReader.Subscribe(); err != nil {
		d.log.Warn("nftables changes are not notified; the NAT rules are read every few seconds instead", "err", err)
	} else {
		defer ch.Close()
		changed = ch.C()
	}
	follow(ctx, servedRecheck, changed, nil, d.readServed)
}
