package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRulesCheckBlock(t *testing.T) {
	protected := []Protected{
		{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
		{netip.MustParsePrefix("::1/128"), "loopback"},
		{netip.MustParsePrefix("192.0.2.1/32"), "an address of this host"},
		{netip.MustParsePrefix("203.0.113.0/24"), "on the allowlist (office)"},
	}
	for in, want := range map[string]string{
		"0.0.0.0/0":       "0.0.0.0/0 would block every IPv4 source",
		"::/0":            "::/0 would block every IPv6 source",
		"10.0.0.0/7":      "10.0.0.0/7 is wider than /8, the narrowest IPv4 block allowed",
		"2001:db8::/31":   "2001:db8::/31 is wider than /32, the narrowest IPv6 block allowed",
		"127.0.0.1/32":    "127.0.0.1/32 is loopback: never blocked",
		"::1/128":         "::1/128 is loopback: never blocked",
		"192.0.2.1/32":    "192.0.2.1/32 is an address of this host: never blocked",
		"192.0.2.0/24":    "192.0.2.0/24 contains 192.0.2.1/32, an address of this host: never blocked",
		"203.0.113.7/32":  "203.0.113.7/32 is on the allowlist (office): never blocked",
		"203.0.112.0/23":  "203.0.112.0/23 contains 203.0.113.0/24, on the allowlist (office): never blocked",
		"::ffff:0:0/96":   "", // parsed elsewhere; here a /96 IPv6 block is fine
		"198.51.100.0/24": "",
		"2001:db8::/32":   "",
	} {
		err := DefaultRules.CheckBlock(netip.MustParsePrefix(in), protected)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s refused: %v", in, err)
		case want != "" && (err == nil || err.Error() != want):
			t.Errorf("%s: %v\n  want %s", in, err, want)
		}
	}
	if err := CheckAllow(netip.MustParsePrefix("0.0.0.0/0")); err == nil || !strings.Contains(err.Error(), "exempt every IPv4 source") {
		t.Errorf("allow 0.0.0.0/0: %v", err)
	}
}
