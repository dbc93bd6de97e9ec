package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":            "192.0.2.7/32",
		"192.0.2.0/24":         "192.0.2.0/24",
		"2001:db8::7":          "2001:db8::7/128",
		"2001:db8::/32":        "2001:db8::/32",
		"::ffff:192.0.2.7":     "192.0.2.7/32",
		"::ffff:192.0.2.0/120": "192.0.2.0/24",
		"0.0.0.0/0":            "0.0.0.0/0",
		"2001:DB8:0:0:0:0:0:7": "2001:db8::7/128",
	} {
		got, err := ParsePrefix(in)
		if err != nil || got != netip.MustParsePrefix(want) {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"10.0.0.300":        `"10.0.0.300" is not an IP or CIDR`,
		"10.0.0.5/8":        `"10.0.0.5/8" has host bits set: write 10.0.0.0/8 for the whole range or 10.0.0.5 for the address`,
		"010.0.0.1":         `"010.0.0.1" has a leading zero, which some tools read as octal: write 10.0.0.1`,
		"192.168.001.0/24":  "write 192.168.1.0/24",
		"10.0.0.1-10.0.0.5": "write a range as CIDRs",
		"fe80::1%eth0":      "has an IPv6 zone",
		"::ffff:0.0.0.0/95": "beyond the IPv4-mapped range",
		"192.0.2.0/33":      "is not an IP or CIDR",
		"":                  "is not an IP or CIDR",
		"example.com":       "is not an IP or CIDR",
	} {
		_, err := ParsePrefix(in)
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParsePrefix(%q) error %v, want it to say %q", in, err, msg)
		}
	}
}

func TestCheckBlockRefusesEverything(t *testing.T) {
	for _, p := range []string{"0.0.0.0/0", "::/0"} {
		if err := CheckBlock(netip.MustParsePrefix(p)); err == nil {
			t.Errorf("%s accepted", p)
		}
	}
	if err := CheckBlock(netip.MustParsePrefix("10.0.0.0/8")); err != nil {
		t.Error(err)
	}
}

func TestNoPacketComesFrom(t *testing.T) {
	for in, msg := range map[string]string{
		"0.0.0.0":         "unspecified",
		"::":              "unspecified",
		"255.255.255.255": "broadcast",
		"224.0.0.1":       "multicast",
		"239.0.0.0/8":     "multicast",
		"ff02::1":         "multicast",
		"ff00::/8":        "multicast",
	} {
		p, err := ParsePrefix(in)
		if err != nil {
			t.Fatal(err)
		}
		for what, err := range map[string]error{"block": CheckBlock(p), "allow": CheckAllow(p)} {
			if err == nil || !strings.Contains(err.Error(), msg) {
				t.Errorf("%s %s: %v, want it refused as %s", what, in, err, msg)
			}
		}
	}
	// Prefixes that only contain such addresses are ordinary.
	for _, in := range []string{"0.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"} {
		if err := CheckBlock(netip.MustParsePrefix(in)); err != nil {
			t.Errorf("block %s: %v", in, err)
		}
	}
}
