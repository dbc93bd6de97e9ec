package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
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

func TestDefaultRouteInterface(t *testing.T) {
	dir := t.TempDir()
	v4 := filepath.Join(dir, "route")
	v6 := filepath.Join(dir, "ipv6_route")
	os.WriteFile(v4, []byte("Iface\tDestination\tGateway\tFlags\n"+
		"ens3\t0002000A\t00000000\t0001\n"+
		"ens4\t00000000\t0102000A\t0003\n"), 0o600)
	os.WriteFile(v6, []byte("00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003 ens5\n"), 0o600)
	if got, err := defaultRouteInterface(v4, v6); err != nil || got != "ens4" {
		t.Errorf("IPv4 default: %q, %v; want ens4", got, err)
	}
	os.WriteFile(v4, []byte("Iface\tDestination\tGateway\tFlags\n"), 0o600)
	if got, err := defaultRouteInterface(v4, v6); err != nil || got != "ens5" {
		t.Errorf("IPv6 default: %q, %v; want ens5", got, err)
	}
	os.WriteFile(v6, nil, 0o600)
	if _, err := defaultRouteInterface(v4, v6); err == nil {
		t.Error("no default route, no error")
	}
}
