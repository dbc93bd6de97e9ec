package hostnet

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// nexthop builds one struct rtnexthop with an RTA_GATEWAY attribute.
func nexthop(gw netip.Addr) []byte {
	ip := gw.AsSlice()
	attr := make([]byte, rtaAlign(unix.SizeofRtAttr+len(ip)))
	binary.NativeEndian.PutUint16(attr[0:], uint16(unix.SizeofRtAttr+len(ip)))
	binary.NativeEndian.PutUint16(attr[2:], unix.RTA_GATEWAY)
	copy(attr[unix.SizeofRtAttr:], ip)
	nh := make([]byte, unix.SizeofRtNexthop, unix.SizeofRtNexthop+len(attr))
	binary.NativeEndian.PutUint16(nh[0:], uint16(unix.SizeofRtNexthop+len(attr)))
	return append(nh, attr...)
}

func TestNexthopGateways(t *testing.T) {
	b := append(nexthop(netip.MustParseAddr("192.0.2.254")), nexthop(netip.MustParseAddr("2001:db8::fe"))...)
	if got, want := nexthopGateways(b), addrsOf("192.0.2.254", "2001:db8::fe"); !slices.Equal(got, want) {
		t.Errorf("gateways %v, want %v", got, want)
	}
	// Truncated or lying lengths end the walk, never panic.
	for n := range len(b) {
		nexthopGateways(b[:n])
	}
	bad := slices.Clone(b)
	binary.NativeEndian.PutUint16(bad[0:], 0xffff)
	if got := nexthopGateways(bad); len(got) != 0 {
		t.Errorf("a record longer than the value gave %v", got)
	}
}

// In a namespace of its own: the snapshot holds the addresses, prefixes,
// default gateways (multipath too) and resolvers, and a change of address
// is notified.
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
