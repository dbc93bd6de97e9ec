package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRulesCheckBlock(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0/0":       "0.0.0.0/0 would block every IPv4 source",
		"::/0":            "::/0 would block every IPv6 source",
		"10.0.0.0/7":      "10.0.0.0/7 is wider than /8, the narrowest IPv4 block allowed",
		"2001:db8::/31":   "2001:db8::/31 is wider than /32, the narrowest IPv6 block allowed",
		"::ffff:0:0/96":   "", // parsed elsewhere; here a /96 IPv6 block is fine
		"198.51.100.0/24": "",
		"2001:db8::/32":   "",
	} {
		err := DefaultRules.CheckBlock(netip.MustParsePrefix(in))
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
