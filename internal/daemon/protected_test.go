package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/etcdtest"
	"github.com/hbf-firewall/hbf/internal/fleet"
	"github.com/hbf-firewall/hbf/internal/protect"
)

// lookups is a resolver the test controls.
type lookups struct {
	mu    sync.Mutex
	names map[string][]netip.Addr
}

func (l *lookups) set(name string, addrs ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.names == nil {
		l.names = map[string][]netip.Addr{}
	}
	l.names[name] = nil
	for _, a := range addrs {
		l.names[name] = append(l.names[name], netip.MustParseAddr(a))
	}
}

func (l *lookups) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if addrs, ok := l.names[host]; ok {
		return addrs, nil
	}
	return nil, errors.New("no such host")
}

// An etcd endpoint named by a DNS name is protected at the addresses the
// name resolves to now: when it moves, the new address is protected and
// the old one is not any more.
func TestEtcdEndpointByNameIsFollowed(t *testing.T) {
	h := newHarness(t)
	var dns lookups
	dns.set("etcd.fleet.test", "198.51.100.50")
	h.d.deps.Lookup, h.d.deps.Root = dns.lookup, fstest.MapFS{}
	h.d.start.Fleet = Fleet{Etcd: []string{"https://etcd.fleet.test:2379"}}
	h.d.refreshNames()
	if !slices.Contains(h.k.AllowPrefixes(), pfx("198.51.100.50/32")) {
		t.Fatalf("etcd's address is not on the kernel's allowlist: %v", h.k.AllowPrefixes())
	}
	wantError(t, h.s.Block(root, []string{"198.51.100.50"}, 0, "", false)[0], "an etcd endpoint of the fleet: never blocked")
	why := h.s.Why(netip.MustParseAddr("198.51.100.50"))
	if why.Verdict != "allowed" || why.Allows[0].Origin != "etcd" || why.Allows[0].Reason != "an etcd endpoint of the fleet" {
		t.Errorf("hbf why etcd: %+v", why)
	}

	dns.set("etcd.fleet.test", "198.51.100.51")
	h.d.refreshNames()
	allows := h.k.AllowPrefixes()
	if !slices.Contains(allows, pfx("198.51.100.51/32")) || slices.Contains(allows, pfx("198.51.100.50/32")) {
		t.Errorf("the kernel's allowlist %v: want etcd's new address in and its old one out", allows)
	}
	if r := h.s.Block(root, []string{"198.51.100.50"}, 0, "", false)[0]; !r.OK {
		t.Errorf("etcd's old address is still protected: %+v", r)
	}

	// A name that stops resolving keeps the address it had.
	dns.set("etcd.fleet.test")
	delete(dns.names, "etcd.fleet.test")
	h.d.refreshNames()
	if !slices.Contains(h.k.AllowPrefixes(), pfx("198.51.100.51/32")) {
		t.Errorf("etcd's address was dropped when its name stopped resolving: %v", h.k.AllowPrefixes())
	}
	if !strings.Contains(h.log.String(), "cannot resolve every NTP server, etcd endpoint and LAPI") {
		t.Errorf("the failure is not logged:\n%s", h.log)
	}
}

// The time daemon's servers and a cloud's metadata service are protected
// from the start: fleet expiry depends on the clock, and an instance reads
// its credentials from the metadata service.
func TestTimeServersAndMetadataAreProtected(t *testing.T) {
	h := newHarness(t)
	var dns lookups
	dns.set("ntp.site.test", "198.51.100.123", "2001:db8:123::123")
	h.d.deps.Lookup = dns.lookup
	h.d.deps.Root = fstest.MapFS{
		"etc/chrony/chrony.conf":      {Data: []byte("server ntp.site.test iburst\nserver 192.0.2.123\n")},
		"sys/class/dmi/id/sys_vendor": {Data: []byte("Amazon EC2\n")},
	}
	if err := h.d.findProtected(); err != nil {
		t.Fatal(err)
	}
	if err := h.d.applyProtected(); err != nil {
		t.Fatal(err)
	}
	origins := map[string]string{}
	for _, a := range h.s.Allows() {
		origins[a.Prefix.String()] = a.Origin
	}
	for p, origin := range map[string]string{"198.51.100.123/32": "ntp", "2001:db8:123::123/128": "ntp", "192.0.2.123/32": "ntp",
		"169.254.169.254/32": "metadata", "fd00:ec2::254/128": "metadata"} {
		if origins[p] != origin || !slices.Contains(h.k.AllowPrefixes(), pfx(p)) {
			t.Errorf("%s: %q, in the kernel %v; want %s", p, origins[p], slices.Contains(h.k.AllowPrefixes(), pfx(p)), origin)
		}
	}
	wantError(t, h.s.Block(root, []string{"198.51.100.0/24"}, 0, "", false)[0],
		"contains 198.51.100.123/32, an NTP server of this host's time daemon")
}

// runNode runs another node of the fleet until stop is called: it leaves
// the fleet then, its membership key revoked.
func runNode(t *testing.T, etcd *etcdtest.Server, name string, addrs ...netip.Addr) (stop func()) {
	t.Helper()
	layout, _ := fleet.NewLayout("/hbf")
	n, err := fleet.NewNode(fleet.Config{Endpoints: []string{etcd.Endpoint()}, Layout: layout, Node: name,
		Member: func() fleet.Member { return fleet.Member{HBF: "test", Addrs: addrs} }, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// The addresses the fleet's members publish are protected here, in the
// kernel too, within limits: an exact entry of a global unicast address,
// 16 a member, inside --fleet-member-prefixes. A member that leaves loses
// its protection; the members last seen are protected again at a start
// before etcd answers.
func TestFleetMembersAreProtected(t *testing.T) {
	h := newHarness(t)
	h.clock.Set(time.Now())
	etcd := etcdtest.Start(t, etcdtest.Options{})
	b4, b6 := netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("2001:db8:2::2")
	stopB := runNode(t, etcd, "b", b4, b6)
	h.joinFleet(etcd, func(f *Fleet) {
		f.MemberPrefixes = []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8::/32")}
	})
	eventuallyTrue(t, "b's addresses in the kernel's allowlist", func() bool {
		allows := h.k.AllowPrefixes()
		return slices.Contains(allows, pfx("198.51.100.2/32")) && slices.Contains(allows, pfx("2001:db8:2::2/128"))
	})
	for _, a := range []netip.Addr{b4, b6} {
		wantError(t, h.s.Block(root, []string{a.String()}, 0, "", false)[0], "an address of b, a member of the fleet: never blocked")
	}
	// A range holding a member is applied: its own entry exempts it.
	if r := h.s.Block(root, []string{"198.51.100.0/24"}, time.Hour, "", false)[0]; !r.OK {
		t.Errorf("a range holding a member: %+v", r)
	}

	// A member publishing what no member may make this host protect.
	var many []string
	for i := range protect.MaxMemberAddrs + 1 {
		many = append(many, fmt.Sprintf(`"198.51.100.%d"`, 10+i))
	}
	now := time.Now().UTC().Format(time.RFC3339)
	for name, addrs := range map[string]string{
		"linklocal": `["fe80::1","127.0.0.1"]`,
		"outside":   `["203.0.113.7"]`,
		"many":      "[" + strings.Join(many, ",") + "]",
	} {
		etcd.MustCtl("put", "/hbf/members/"+name, `{"version":1,"hbf":"evil","addrs":`+addrs+`,"clock":"`+now+`"}`)
	}
	eventuallyTrue(t, "the refusals counted", func() bool {
		r := h.d.fleetStats().Rejected
		return r[protect.RejectMemberNotGlobal] == 2 && r[protect.RejectMemberOutside] == 1 && r[protect.RejectMemberTooMany] == 1
	})
	for _, p := range []string{"fe80::1/128", "203.0.113.7/32", "198.51.100.26/32"} {
		if slices.Contains(h.k.AllowPrefixes(), pfx(p)) {
			t.Errorf("%s, which a member may not make this host protect, is on the kernel's allowlist", p)
		}
	}
	if !slices.Contains(h.k.AllowPrefixes(), pfx("198.51.100.25/32")) {
		t.Error("the 16 addresses of a member that published 17 are not protected")
	}

	// b leaves: its addresses are ordinary again.
	stopB()
	eventuallyTrue(t, "b's protection gone", func() bool { return !slices.Contains(h.k.AllowPrefixes(), pfx("198.51.100.2/32")) })
	if r := h.s.Block(root, []string{b4.String()}, time.Hour, "", false)[0]; !r.OK {
		t.Errorf("the address of a member that left: %+v", r)
	}
	if stored, _ := h.st.Members(); len(stored["b"]) != 0 || len(stored["many"]) != protect.MaxMemberAddrs+1 {
		t.Errorf("the members kept for the next start: %v", stored)
	}
}

// At a start the members last seen are protected before etcd answers.
func TestFleetMembersLastSeenAreProtectedAtStart(t *testing.T) {
	h := newHarness(t)
	if err := h.st.SaveMembers(map[string][]netip.Addr{"b": {netip.MustParseAddr("198.51.100.2")}}); err != nil {
		t.Fatal(err)
	}
	h.d.deps.Root = fstest.MapFS{}
	h.d.start.Fleet = Fleet{Etcd: []string{"http://192.0.2.50:2379"}}
	if err := h.d.findProtected(); err != nil {
		t.Fatal(err)
	}
	if err := h.d.applyProtected(); err != nil {
		t.Fatal(err)
	}
	allows := h.k.AllowPrefixes()
	if !slices.Contains(allows, pfx("198.51.100.2/32")) || !slices.Contains(allows, pfx("192.0.2.50/32")) {
		t.Errorf("the kernel's allowlist %v: want the member last seen and etcd", allows)
	}
	allowed := h.s.Allows()
	if !slices.ContainsFunc(allowed, func(a api.Allow) bool {
		return a.Origin == "member" && a.Reason == "an address of b, a member of the fleet"
	}) {
		t.Errorf("hbf list --allowed: %+v", allowed)
	}
}
