package hostnet

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

func addrsOf(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestReadResolvers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := `# generated
nameserver 192.0.2.53
nameserver   2001:db8::53
nameserver fe80::1%eth0
nameserver 192.0.2.300
nameserver
search example.org
options ndots:2
;nameserver 198.51.100.1
nameserver ::ffff:198.51.100.53
`
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadResolvers(path)
	if err != nil {
		t.Fatal(err)
	}
	want := addrsOf("192.0.2.53", "2001:db8::53", "fe80::1", "198.51.100.53")
	if !slices.Equal(got, want) {
		t.Errorf("resolvers %v, want %v", got, want)
	}
	if _, err := ReadResolvers(filepath.Join(t.TempDir(), "none")); !os.IsNotExist(err) {
		t.Errorf("missing file: %v, want not-exist", err)
	}
}

func TestSnapshotAndChanges(t *testing.T) {
	testenv.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lab, err := netlab.New(ctx, netlab.Options{Peers: []string{"peer"}})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	h := lab.Host
	for _, args := range [][]string{
		{"route", "add", "default", "via", "192.0.2.254"},
		{"-6", "route", "add", "default", "nexthop", "via", "2001:db8::fe", "nexthop", "via", "2001:db8::fd"},
	} {
		if out, err := h.Run(ctx, "ip", args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 198.51.100.53\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var snap Snapshot
	var changes *Changes
	if err := h.Do(func() (err error) {
		if snap, err = Read(resolv); err != nil {
			return err
		}
		changes, err = Subscribe()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer changes.Close()
	for _, a := range addrsOf("127.0.0.1", "::1", "192.0.2.1", "2001:db8::1") {
		if !slices.Contains(snap.Addrs, a) {
			t.Errorf("addresses %v lack %v", snap.Addrs, a)
		}
	}
	for _, p := range []string{"192.0.2.0/24", "2001:db8::/64"} {
		if !slices.Contains(snap.Prefixes, netip.MustParsePrefix(p)) {
			t.Errorf("prefixes %v lack %v", snap.Prefixes, p)
		}
	}
	if want := addrsOf("192.0.2.254", "2001:db8::fd", "2001:db8::fe"); !slices.Equal(snap.Gateways, want) {
		t.Errorf("gateways %v, want %v", snap.Gateways, want)
	}
	if want := addrsOf("198.51.100.53"); !slices.Equal(snap.Resolvers, want) {
		t.Errorf("resolvers %v, want %v", snap.Resolvers, want)
	}

	if out, err := h.Run(ctx, "ip", "addr", "add", "203.0.113.7/24", "dev", netlab.Iface); err != nil {
		t.Fatalf("add address: %v: %s", err, out)
	}
	select {
	case <-changes.C():
	case <-ctx.Done():
		t.Fatal("no change notified after adding an address")
	}
	var next Snapshot
	if err := h.Do(func() (err error) { next, err = Read(resolv); return err }); err != nil {
		t.Fatal(err)
	}
	if next.Equal(snap) || !slices.Contains(next.Addrs, netip.MustParseAddr("203.0.113.7")) {
		t.Errorf("after the change, addresses %v: want 203.0.113.7 in them", next.Addrs)
	}
}

func TestDefaultRouteInterface(t *testing.T) {
	testenv.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lab, err := netlab.New(ctx, netlab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	h := lab.Host
	ip := func(args ...string) {
		t.Helper()
		if out, err := h.Run(ctx, "ip", args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	// A second interface, so that the answer is the route's, not the only one.
	ip("link", "add", "other7", "type", "veth", "peer", "name", "other7b")
	ip("link", "set", "other7b", "up")
	ip("link", "set", "other7", "up")
	ip("addr", "add", "198.51.100.1/24", "dev", "other7")
	ip("-6", "addr", "add", "2001:db8:7::1/64", "dev", "other7", "nodad")
	iface := func() (name string, err error) {
		if derr := h.Do(func() error { name, err = DefaultRouteInterface(); return nil }); derr != nil {
			t.Fatal(derr)
		}
		return name, err
	}
	if _, err := iface(); !errors.Is(err, ErrNoDefaultRoute) {
		t.Errorf("no default route: %v, want ErrNoDefaultRoute", err)
	}
	ip("-6", "route", "add", "default", "via", "2001:db8:7::fe", "dev", "other7")
	if got, err := iface(); err != nil || got != "other7" {
		t.Errorf("IPv6 default only: %q, %v; want other7", got, err)
	}
	ip("route", "add", "default", "via", "192.0.2.254", "dev", netlab.Iface)
	if got, err := iface(); err != nil || got != netlab.Iface {
		t.Errorf("IPv4 default: %q, %v; want %s", got, err, netlab.Iface)
	}
}

func TestEphemeralPorts(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		in      string
		want    [2]uint16
		wantErr bool
	}{
		{"32768\t60999\n", [2]uint16{32768, 60999}, false},
		{"1024 65535", [2]uint16{1024, 65535}, false},
		{"60999 32768", [2]uint16{}, true},
		{"lots", [2]uint16{}, true},
	} {
		path := filepath.Join(dir, "range")
		if err := os.WriteFile(path, []byte(c.in), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := EphemeralPorts(path)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("EphemeralPorts(%q) = %v, %v; want %v, error %v", c.in, got, err, c.want, c.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the file", err)
		}
	}
	if _, err := EphemeralPorts(EphemeralPortsFile); err != nil {
		t.Errorf("this host's range: %v", err)
	}
}
