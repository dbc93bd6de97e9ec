// Package policy says what may be blocked and allowed, and turns what
// operators write into the prefixes the data plane holds.
package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParsePrefix reads an IP address (a single host) or a CIDR. It never widens:
// a CIDR with host bits set is refused rather than masked. IPv4-mapped IPv6
// is the IPv4 address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "%") {
		return netip.Prefix{}, fmt.Errorf("%q has an IPv6 zone; hbf matches addresses, not zones", s)
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP or CIDR", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP or CIDR", s)
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q reaches beyond the IPv4-mapped range ::ffff:0:0/96", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set: write %s for the whole range or %s for the address",
			s, m, p.Addr())
	}
	return p, nil
}

// CheckBlock refuses blocks no careful operator means.
func CheckBlock(p netip.Prefix) error {
	if p.Bits() == 0 {
		return fmt.Errorf("%s would block every %s source", p, family(p))
	}
	return nil
}
