package daemon

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestNeverBlock(t *testing.T) {
	addrs := []net.Addr{
		&net.IPNet{IP: net.ParseIP("192.0.2.1"), Mask: net.CIDRMask(24, 32)},
		&net.IPNet{IP: net.ParseIP("2001:db8::1"), Mask: net.CIDRMask(64, 128)},
	}
	got := prefixes(neverBlock(addrs, "198.51.100.7 50022 192.0.2.1 22"))
	for _, want := range []string{"127.0.0.0/8", "::1/128", "192.0.2.1/32", "2001:db8::1/128", "198.51.100.7/32"} {
		if !slices.Contains(got, netip.MustParsePrefix(want)) {
			t.Errorf("%s is not on the never-block list %v", want, got)
		}
	}
	// The host's own address, not its whole subnet.
	if slices.Contains(got, netip.MustParsePrefix("192.0.2.0/24")) {
		t.Errorf("the host's subnet is on the list: %v", got)
	}
	if got := prefixes(neverBlock(nil, "fe80::1%eth0 50022 fe80::2%eth0 22")); !slices.Contains(got, netip.MustParsePrefix("fe80::1/128")) {
		t.Errorf("an SSH client with a zone is missing: %v", got)
	}
	if got := neverBlock(nil, "garbage"); len(got) != 2 {
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
