package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"

	"github.com/hbf-firewall/hbf/internal/ports"
)

// SetLocalAddrs replaces the host's own addresses: only an attempt on one
// of them can meet a closed port (UDP, and SYNs with
// Settings.CountClosed). An address the host does not hold never counts;
// so broadcast, multicast and forwarded traffic never do.
func (d *Dataplane) SetLocalAddrs(addrs []netip.Addr) error {
	want := map[hbfAddr]bool{}
	for _, a := range addrs {
		want[hbfAddr{B: a.As16()}] = true
	}
	m := d.objs.LocalAddrs
	var errs []error
	for k := range want {
		if err := m.Put(k, uint8(1)); err != nil {
			errs = append(errs, fmt.Errorf("add local address %v: %w", netip.AddrFrom16(k.B).Unmap(), err))
		}
	}
	var stale []hbfAddr
	var k hbfAddr
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("walk local addresses: %w", err))
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("remove local address %v: %w", netip.AddrFrom16(k.B).Unmap(), err))
		}
	}
	return errors.Join(errs...)
}

// LocalAddrs lists the addresses SetLocalAddrs set, sorted.
func (d *Dataplane) LocalAddrs() ([]netip.Addr, error) {
	var out []netip.Addr
	var k hbfAddr
	var v uint8
	it := d.objs.LocalAddrs.Iterate()
	for it.Next(&k, &v) {
		out = append(out, netip.AddrFrom16(k.B).Unmap())
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("walk local addresses: %w", err)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// SetServed replaces the ports the host serves without a socket of its
// own (DNAT, IPVS): they are open, so they never count where only closed
// ports do.
func (d *Dataplane) SetServed(served []ports.Port) error {
	var tcp, udp ports.Bits
	for _, p := range served {
		if p.Proto == ports.UDP {
			udp.Set(p.Num)
		} else {
			tcp.Set(p.Num)
		}
	}
	if err := d.objs.HbfServedTcp.Set(&tcp); err != nil {
		return fmt.Errorf("write served TCP ports: %w", err)
	}
	if err := d.objs.HbfServedUdp.Set(&udp); err != nil {
		return fmt.Errorf("write served UDP ports: %w", err)
	}
	return nil
}

// CheckSocketLookup reports whether the kernel lets this hook's program
// ask for sockets (bpf_sk_lookup_udp, bpf_skc_lookup_tcp: Linux 5.2 at
// XDP), which closed-port counting needs. Load fails without them; this
// says why first.
func CheckSocketLookup(h Hook) error {
	typ := ebpf.XDP
	if h == HookTCX {
		typ = ebpf.SchedCLS
	}
	for _, fn := range []asm.BuiltinFunc{asm.FnSkLookupUdp, asm.FnSkcLookupTcp} {
		if err := features.HaveProgramHelper(typ, fn); err != nil {
			return fmt.Errorf("the kernel does not let %s programs look up sockets (%v: %w); "+
				"hbf needs Linux 5.2 or later to tell closed ports from open ones", h, fn, err)
		}
	}
	return nil
}
