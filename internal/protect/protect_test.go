package protect

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hbf-firewall/hbf/internal/hostnet"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestHost(t *testing.T) {
	host := hostnet.Snapshot{
		Addrs:     []netip.Addr{addr("127.0.0.1"), addr("192.0.2.1"), addr("2001:db8::1")},
		Prefixes:  []netip.Prefix{pfx("192.0.2.0/24"), pfx("2001:db8::/64")},
		Gateways:  []netip.Addr{addr("192.0.2.254"), addr("fe80::1")},
		Resolvers: []netip.Addr{addr("198.51.100.53"), addr("127.0.0.53")},
	}
	got := NewSet(Host(host, "/etc/resolv.conf"), SSHClient("198.51.100.7 50022 192.0.2.1 22"))
	want := map[string]Kind{
		"127.0.0.0/8": KindLoopback, "::1/128": KindLoopback, "192.0.2.1/32": KindHost, "2001:db8::1/128": KindHost,
		"192.0.2.254/32": KindGateway, "fe80::1/128": KindGateway, "198.51.100.53/32": KindResolver, "198.51.100.7/32": KindSSH,
	}
	if got.Len() != len(want) {
		t.Errorf("entries %v, want %d", got.Entries(), len(want))
	}
	for _, e := range got.Entries() {
		if k, ok := want[e.Prefix.String()]; !ok || k != e.Kind {
			t.Errorf("%v as %v: want %v", e.Prefix, e.Kind, want[e.Prefix.String()])
		}
	}
	// The host's own address, not its whole subnet.
	if err := got.Check(pfx("192.0.2.0/25")); err == nil || !strings.Contains(err.Error(), "contains 192.0.2.1/32, an address of this host") {
		t.Errorf("a block of the host's half subnet: %v", err)
	}
	if err := got.Check(pfx("192.0.2.128/25")); err == nil || !strings.Contains(err.Error(), "a default gateway") {
		t.Errorf("a block of the gateway's half: %v", err)
	}
	if e := SSHClient("fe80::1%eth0 50022 fe80::2%eth0 22"); len(e) != 1 || e[0].Prefix != pfx("fe80::1/128") {
		t.Errorf("an SSH client with a zone: %v", e)
	}
	if e := SSHClient("garbage"); len(e) != 0 {
		t.Errorf("a malformed SSH_CONNECTION: %v", e)
	}
}

func TestSetKeepsTheFirstKindOfAPrefix(t *testing.T) {
	in := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	members, _ := Members(map[string][]netip.Addr{"b": {addr("198.51.100.7")}}, nil)
	s := NewSet(
		[]Entry{{Prefix: pfx("198.51.100.7/32"), Kind: KindAllow, Why: "on the allowlist", Expires: in}},
		members,
		Etcd([]netip.Addr{addr("198.51.100.7")}),
		[]Entry{{Prefix: pfx("198.51.100.8/32"), Kind: KindAllow, Expires: in},
			{Prefix: pfx("198.51.100.8/32"), Kind: KindFleetAllow, Expires: in.Add(time.Hour)}},
	)
	es := s.Entries()
	if len(es) != 2 || es[0].Kind != KindEtcd || !es[0].Expires.IsZero() || es[1].Kind != KindAllow || !es[1].Expires.Equal(in.Add(time.Hour)) {
		t.Errorf("entries %+v: want etcd's for good, then the manual allow until the later expiry", es)
	}
}

func TestCheck(t *testing.T) {
	members, _ := Members(map[string][]netip.Addr{"b": {addr("198.51.100.9"), addr("2001:db8:9::9")}}, nil)
	s := NewSet(Host(hostnet.Snapshot{Addrs: []netip.Addr{addr("192.0.2.1"), addr("2001:db8::1")}}, ""),
		Flags([]netip.Prefix{pfx("203.0.113.0/24")}), members)
	for p, want := range map[string]string{
		"192.0.2.1/32":      "192.0.2.1/32 is an address of this host: never blocked",
		"192.0.2.0/24":      "192.0.2.0/24 contains 192.0.2.1/32, an address of this host: never blocked",
		"203.0.113.7/32":    "203.0.113.7/32 is allowed by --allow: never blocked",
		"203.0.0.0/16":      "203.0.0.0/16 contains 203.0.113.0/24, allowed by --allow",
		"127.0.0.1/32":      "is loopback",
		"198.51.100.9/32":   "198.51.100.9/32 is an address of b, a member of the fleet: never blocked",
		"2001:db8::/32":     "contains 2001:db8::1/128, an address of this host",
		"2001:db8:9::9/128": "an address of b, a member of the fleet",
	} {
		if err := s.Check(pfx(p)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("block %s: %v, want it refused: %q", p, err, want)
		}
	}
	// A range holding a member is applied: the member's own entry in the
	// kernel exempts it, and a member cannot cancel range blocks.
	for _, p := range []string{"198.51.100.0/24", "2001:db8:9::/48", "198.51.100.10/32", "10.0.0.0/8"} {
		if err := s.Check(pfx(p)); err != nil {
			t.Errorf("block %s: %v", p, err)
		}
	}
	var empty *Set
	if err := empty.Check(pfx("192.0.2.1/32")); err != nil {
		t.Errorf("the empty set refuses: %v", err)
	}
}

// A million-line list is checked against thousands of members: each check
// costs lookups by prefix length, not a walk of the set.
func TestCheckIsByLookup(t *testing.T) {
	members := map[string][]netip.Addr{}
	for i := range 4000 {
		members[fmt.Sprintf("m%d", i)] = []netip.Addr{netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})}
	}
	entries, _ := Members(members, nil)
	s := NewSet(entries)
	allocs := testing.AllocsPerRun(100, func() { _ = s.Check(pfx("198.51.100.7/32")) })
	if allocs != 0 {
		t.Errorf("a check allocates %v times", allocs)
	}
	if err := s.Check(pfx("100.64.15.159/32")); err == nil {
		t.Error("a member's address was not refused")
	}
}

func TestKernelTakesTheFirstKinds(t *testing.T) {
	members, _ := Members(map[string][]netip.Addr{"b": {addr("198.51.100.9"), addr("198.51.100.10")}}, nil)
	s := NewSet(members, Host(hostnet.Snapshot{Gateways: []netip.Addr{addr("192.0.2.254")}}, ""),
		Etcd([]netip.Addr{addr("192.0.2.50")}))
	in, left := s.Kernel(4)
	var kinds []Kind
	for _, e := range in {
		kinds = append(kinds, e.Kind)
	}
	if !slices.Equal(kinds, []Kind{KindLoopback, KindLoopback, KindGateway, KindEtcd}) || len(left) != 2 || left[0].Kind != KindMember {
		t.Errorf("in the kernel %v, left %v", in, left)
	}
}

func TestHolding(t *testing.T) {
	s := NewSet(Flags([]netip.Prefix{pfx("192.0.2.0/24")}), Etcd([]netip.Addr{addr("192.0.2.50")}))
	got := s.Holding(addr("::ffff:192.0.2.50"))
	if len(got) != 2 {
		t.Errorf("holding 192.0.2.50: %v", got)
	}
}

func TestMembers(t *testing.T) {
	var many []netip.Addr
	for i := range MaxMemberAddrs + 1 {
		many = append(many, netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}))
	}
	entries, refused := Members(map[string][]netip.Addr{
		"b":    {addr("fe80::1"), addr("127.0.0.1"), addr("ff02::1"), addr("0.0.0.0"), addr("203.0.113.9"), addr("2001:db8::9")},
		"many": many,
	}, []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8::/32")})
	if refused[RejectMemberNotGlobal] != 4 || refused[RejectMemberOutside] != 1 || refused[RejectMemberTooMany] != 1 {
		t.Errorf("refused %v", refused)
	}
	if len(entries) != 1+MaxMemberAddrs {
		t.Errorf("%d entries, want b's one inside the prefixes and many's %d", len(entries), MaxMemberAddrs)
	}
	for _, e := range entries {
		if e.Prefix.Bits() != e.Prefix.Addr().BitLen() || e.Kind != KindMember {
			t.Errorf("entry %+v: want an exact host entry of a member", e)
		}
	}
	if _, refused := Members(map[string][]netip.Addr{"b": {addr("203.0.113.9")}}, nil); len(refused) != 0 {
		t.Errorf("without --fleet-member-prefixes any global address is taken: %v", refused)
	}
}

func TestResolve(t *testing.T) {
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		if host == "etcd.example" {
			return []netip.Addr{addr("::ffff:192.0.2.60"), addr("2001:db8::60")}, nil
		}
		return nil, errors.New("no such host")
	}
	hosts := EndpointHosts([]string{"https://etcd.example:2379", "http://192.0.2.61:2379", "http://[2001:db8::61]:2379", "http://nowhere.example:2379"})
	got, errs := Resolve(context.Background(), lookup, hosts, nil)
	want := []netip.Addr{addr("192.0.2.60"), addr("192.0.2.61"), addr("2001:db8::60"), addr("2001:db8::61")}
	if !slices.Equal(got.Addrs(), want) || len(errs) != 1 || !strings.Contains(errs[0].Error(), "nowhere.example") {
		t.Errorf("resolved %v, %v; want %v and nowhere.example unresolved", got, errs, want)
	}
	// A name that stops resolving keeps its addresses; the others' are
	// what they resolve to now.
	prev := Resolved{"nowhere.example": {addr("192.0.2.62")}, "etcd.example": {addr("192.0.2.59")}}
	got, _ = Resolve(context.Background(), lookup, hosts, prev)
	if !slices.Contains(got.Addrs(), addr("192.0.2.62")) || slices.Contains(got.Addrs(), addr("192.0.2.59")) {
		t.Errorf("resolved %v from %v: want the failed name's kept, the other's replaced", got.Addrs(), prev)
	}
}

func TestTimeServers(t *testing.T) {
	fsys := fstest.MapFS{
		"etc/chrony/chrony.conf": {Data: []byte("# a comment\npool 2.debian.pool.ntp.org iburst\nserver 192.0.2.123 iburst\n" +
			"sourcedir /etc/chrony/sources.d\nconfdir /etc/chrony/conf.d\nmakestep 1 3\n! server ignored.example\n")},
		"etc/chrony/sources.d/site.sources":      {Data: []byte("server ntp1.example.net\n")},
		"etc/chrony/conf.d/peer.conf":            {Data: []byte("peer 2001:db8::123\n")},
		"etc/ntpsec/ntp.conf":                    {Data: []byte("pool 0.pool.ntp.org\nserver 127.127.1.0\nrestrict default\n")},
		"etc/systemd/timesyncd.conf":             {Data: []byte("[Time]\n#NTP=\n#FallbackNTP=0.debian.pool.ntp.org 1.debian.pool.ntp.org\n")},
		"etc/systemd/timesyncd.conf.d/site.conf": {Data: []byte("[Time]\nNTP=time.example.org 192.0.2.124\n")},
	}
	got := Hosts(TimeServers(fsys))
	want := []string{"2.debian.pool.ntp.org", "192.0.2.123", "ntp1.example.net", "2001:db8::123", "0.pool.ntp.org", "127.127.1.0",
		"time.example.org", "192.0.2.124", "0.debian.pool.ntp.org", "1.debian.pool.ntp.org"}
	if !slices.Equal(got, want) {
		t.Errorf("time servers\n got %v\nwant %v", got, want)
	}
	// An empty FallbackNTP= turns the built-in ones off.
	fsys["etc/systemd/timesyncd.conf.d/site.conf"] = &fstest.MapFile{Data: []byte("[Time]\nNTP=192.0.2.124\nFallbackNTP=\n")}
	delete(fsys, "etc/chrony/chrony.conf")
	delete(fsys, "etc/ntpsec/ntp.conf")
	if got := Hosts(TimeServers(fsys)); !slices.Equal(got, []string{"192.0.2.124"}) {
		t.Errorf("with FallbackNTP= empty: %v", got)
	}
	// The reference clock's loopback address is no one's to protect.
	if e := NTP([]netip.Addr{addr("127.127.1.0"), addr("192.0.2.123")}); len(e) != 1 {
		t.Errorf("NTP entries %v", e)
	}
}

func TestCloud(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"Amazon EC2":      {"sys/class/dmi/id/sys_vendor": {Data: []byte("Amazon EC2\n")}},
		"Google Cloud":    {"sys/class/dmi/id/product_name": {Data: []byte("Google Compute Engine\n")}},
		"Microsoft Azure": {"sys/class/dmi/id/chassis_asset_tag": {Data: []byte("7783-7084-3265-9085-8269-3286-77\n")}},
		"cloud-init":      {"run/cloud-init/instance-data.json": {Data: []byte("{}")}},
		"":                {"sys/class/dmi/id/sys_vendor": {Data: []byte("QEMU\n")}},
	} {
		if got := Cloud(fsys); got != name {
			t.Errorf("Cloud: %q, want %q", got, name)
		}
	}
	if e := Metadata("Amazon EC2"); len(e) != 2 || e[0].Prefix != pfx("169.254.169.254/32") || e[1].Prefix != pfx("fd00:ec2::254/128") {
		t.Errorf("metadata entries %v", e)
	}
	if e := Metadata(""); len(e) != 0 {
		t.Errorf("outside a cloud: %v", e)
	}
}

// TestCheckAgreesWithAWalk holds Check, with its shortcut for blocks far
// from every entry, to a walk over the entries, on prefixes near them and
// far, of both families and every length.
func TestCheckAgreesWithAWalk(t *testing.T) {
	members, _ := Members(map[string][]netip.Addr{"b": {addr("198.51.100.9"), addr("2001:db8:9::9")}}, nil)
	s := NewSet(Host(hostnet.Snapshot{Addrs: []netip.Addr{addr("192.0.2.1"), addr("2001:db8::1")},
		Prefixes: []netip.Prefix{pfx("192.0.2.0/24")}}, ""),
		Flags([]netip.Prefix{pfx("203.0.113.0/24"), pfx("100.0.0.0/10"), pfx("fc00::/7")}), members)
	walk := func(p netip.Prefix) bool {
		for _, e := range s.Entries() {
			if e.Prefix.Addr().Is4() != p.Addr().Is4() {
				continue
			}
			if e.Prefix.Bits() <= p.Bits() && e.Prefix.Contains(p.Addr()) ||
				e.Prefix.Bits() > p.Bits() && p.Contains(e.Prefix.Addr()) && e.Kind.vetoesRanges() {
				return true
			}
		}
		return false
	}
	rng := rand.New(rand.NewPCG(1, 2))
	near := []netip.Addr{addr("192.0.2.77"), addr("203.0.113.1"), addr("100.63.255.255"), addr("100.64.0.1"),
		addr("198.51.100.9"), addr("127.0.0.1"), addr("2001:db8::1"), addr("fd00::1"), addr("2001:db8:9::9")}
	for i := range 20000 {
		var a netip.Addr
		switch i % 3 {
		case 0:
			a = near[rng.IntN(len(near))]
		case 1:
			a = netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		default:
			var b [16]byte
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			a = netip.AddrFrom16(b)
		}
		p := netip.PrefixFrom(a, rng.IntN(a.BitLen()+1)).Masked()
		if refused := s.Check(p) != nil; refused != walk(p) {
			t.Fatalf("block %s: refused %v, the walk says %v", p, refused, walk(p))
		}
	}
}
