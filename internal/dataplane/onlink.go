package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
)

// LinkLocal is always on-link.
var LinkLocal = netip.MustParsePrefix("fe80::/10")

// SetOnLink replaces the IPv6 prefixes the program treats as on-link: their
// sources are neighbours, counted and blocked per address, never with their
// whole prefix (Settings.IPv6ScanPrefix). IPv4 prefixes are ignored: the
// program aggregates IPv6 only. fe80::/10 is always on-link.
func (d *Dataplane) SetOnLink(prefixes []netip.Prefix) error {
	want := map[hbfLpmKey]bool{}
	for _, p := range append([]netip.Prefix{LinkLocal}, prefixes...) {
		p = p.Masked()
		if !p.Addr().Is6() || p.Addr().Is4In6() {
			continue
		}
		addr, bits, err := key16(p)
		if err != nil {
			return fmt.Errorf("on-link prefix %v: %w", p, err)
		}
		want[hbfLpmKey{Prefixlen: bits, Addr: addr}] = true
	}
	m := d.objs.OnlinkPrefixes
	// Add first, then remove: a neighbour never passes through a moment of
	// being off-link, when another's scan could block it with the prefix.
	var errs []error
	for k := range want {
		if err := m.Put(k, uint8(1)); err != nil {
			errs = append(errs, fmt.Errorf("add on-link prefix %v: %w", prefixOf(k.Addr, k.Prefixlen), err))
		}
	}
	var stale []hbfLpmKey
	var k hbfLpmKey
	it := m.Iterate()
	var v uint8
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("walk on-link prefixes: %w", err))
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil {
			errs = append(errs, fmt.Errorf("remove on-link prefix %v: %w", prefixOf(k.Addr, k.Prefixlen), err))
		}
	}
	return errors.Join(errs...)
}

// OnLink lists the prefixes SetOnLink set, fe80::/10 included.
func (d *Dataplane) OnLink() ([]netip.Prefix, error) {
	var out []netip.Prefix
	var k hbfLpmKey
	var v uint8
	it := d.objs.OnlinkPrefixes.Iterate()
	for it.Next(&k, &v) {
		out = append(out, prefixOf(k.Addr, k.Prefixlen))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("walk on-link prefixes: %w", err)
	}
	return out, nil
}
