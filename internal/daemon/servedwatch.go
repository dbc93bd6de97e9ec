package daemon

import (
	"context"
	"time"

	"github.com/hbf-firewall/hbf/internal/natports"
	"github.com/hbf-firewall/hbf/internal/ports"
)

const (
	// servedPoll is how often nftables' generation is read: a DNAT port
	// published counts as open within it (docs/security.md).
	servedPoll = time.Second
	// servedRecheck is how often the NAT rules and IPVS services are read
	// with no generation moved: IPVS tells nothing of its changes.
	servedRecheck = 10 * time.Second
)

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

// followServed reads the NAT rules again within servedPoll of an nftables
// commit, and every servedRecheck for IPVS, which tells nothing of its
// changes. At most one read per servedPoll, however often other tools
// commit: a kube-proxy or CrowdSec loading sets in a loop costs hbf one
// read a second, and costs the kernel nothing on hbf's account.
func (d *daemon) followServed(ctx context.Context) {
	poll := time.NewTicker(servedPoll)
	defer poll.Stop()
	gen, genErr := d.natReader.Generation()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-poll.C:
			next, err := d.natReader.Generation()
			// A generation that cannot be read leaves the recheck alone to read.
			moved := err == nil && (genErr != nil || next != gen)
			gen, genErr = next, err
			if !moved && now.Sub(last) < servedRecheck {
				continue
			}
			last = now
			d.readServed()
		}
	}
}
