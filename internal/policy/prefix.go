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
			return netip.Prefix{}, notPrefix(s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, notPrefix(s)
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

// notPrefix says why s is not an address or CIDR, with a hint for the
// usual mistakes.
func notPrefix(s string) error {
	addr, bits, hasBits := strings.Cut(s, "/")
	if fields := strings.Split(addr, "."); len(fields) == 4 {
		fixed, zeros := make([]string, 4), false
		for i, f := range fields {
			fixed[i] = strings.TrimLeft(f, "0")
			if fixed[i] == "" {
				fixed[i] = "0"
			}
			zeros = zeros || fixed[i] != f
		}
		if zeros {
			hint := strings.Join(fixed, ".")
			if hasBits {
				hint += "/" + bits
			}
			if _, err := netip.ParsePrefix(hint); err == nil || !hasBits {
				if _, err := netip.ParseAddr(strings.Join(fixed, ".")); err == nil {
					return fmt.Errorf("%q has a leading zero, which some tools read as octal: write %s", s, hint)
				}
			}
		}
	}
	if strings.Contains(s, "-") {
		return fmt.Errorf("%q is not an IP or CIDR: write a range as CIDRs", s)
	}
	return fmt.Errorf("%q is not an IP or CIDR", s)
}

var (
	multicast4 = netip.MustParsePrefix("224.0.0.0/4")
	multicast6 = netip.MustParsePrefix("ff00::/8")
	broadcast4 = netip.MustParsePrefix("255.255.255.255/32")
)

// checkSource refuses what no packet comes from: a block or allow of it
// does nothing, so it is a mistake.
func checkSource(p netip.Prefix) error {
	switch {
	case p.Bits() == p.Addr().BitLen() && p.Addr().IsUnspecified():
		return fmt.Errorf("%s is the unspecified address, which only a host with no address yet sends from (DHCP, DAD); "+
			"nothing to match", p.Addr())
	case p == broadcast4:
		return fmt.Errorf("%s is the broadcast address: never the source of a packet", p.Addr())
	case (multicast4.Contains(p.Addr()) && p.Bits() >= multicast4.Bits()) ||
		(multicast6.Contains(p.Addr()) && p.Bits() >= multicast6.Bits()):
		return fmt.Errorf("%s is multicast: never the source of a packet", p)
	}
	return nil
}

// CheckBlock refuses blocks no careful operator means.
func CheckBlock(p netip.Prefix) error {
	if p.Bits() == 0 {
		return &TooWideError{Prefix: p}
	}
	return checkSource(p)
}
