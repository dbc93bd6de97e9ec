package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/hbf-firewall/hbf/internal/hostnet"
)

func TestNeverBlock(t *testing.T) {
	host := hostnet.Snapshot{
		Addrs:     []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
		Prefixes:  []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64")},
		Gateways:  []netip.Addr{netip.MustParseAddr("192.0.2.254"), netip.MustParseAddr("fe80::1")},
		Resolvers: []netip.Addr{netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("127.0.0.53")},
	}
	got := neverBlock(host, "/etc/resolv.conf", "198.51.100.7 50022 192.0.2.1 22")
	want := map[string]string{
		"127.0.0.0/8": "loopback", "::1/128": "loopback", "192.0.2.1/32": "host", "2001:db8::1/128": "host",
		"192.0.2.254/32": "gateway", "fe80::1/128": "gateway", "198.51.100.53/32": "resolver", "198.51.100.7/32": "ssh",
	}
	if len(got) != len(want) {
		t.Errorf("never-block list %v, want %d entries", got, len(want))
	}
	for _, f := range got {
		if want[f.prefix.String()] != f.origin {
			t.Errorf("%v as %q: want %q", f.prefix, f.origin, want[f.prefix.String()])
		}
	}
	// The host's own address, not its whole subnet.
	if slices.Contains(prefixes(got), netip.MustParsePrefix("192.0.2.0/24")) {
		t.Errorf("the host's subnet is on the list: %v", got)
	}
	if got := prefixes(neverBlock(hostnet.Snapshot{}, "", "fe80::1%eth0 50022 fe80::2%eth0 22")); !slices.Contains(got, netip.MustParsePrefix("fe80::1/128")) {
		t.Errorf("an SSH client with a zone is missing: %v", got)
	}
	if got := neverBlock(hostnet.Snapshot{}, "", "garbage"); len(got) != 2 {
		t.Errorf("a malformed SSH_CONNECTION added entries: %v", got)
	}
}

func prefixes(f []fixedAllow) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range f {
		out = append(out, a.prefix)
	}
	return out
}
