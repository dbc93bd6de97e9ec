package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/etcdtest"
	"github.com/hbf-firewall/hbf/internal/netlab"
)

// scanEvent waits for the JSON event of a scan from src and says whether
// it was allowlisted.
func (d *daemonProc) scanEvent(src netip.Addr) bool {
	d.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range d.output() {
			var ev struct {
				Event       string `json:"event"`
				Src         string `json:"src"`
				Allowlisted bool   `json:"allowlisted"`
			}
			if json.Unmarshal([]byte(l), &ev) == nil && ev.Event == "portscan" && ev.Src == src.String() {
				return ev.Allowlisted
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.t.Fatalf("no scan event from %s:\n%s", src, strings.Join(d.output(), "\n"))
	return false
}

// host is the exact prefix of a.
func host(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// Two hosts and one etcd, and a machine on the segment that forges scans
// from etcd's address, from the other member's (IPv4 and IPv6) and from a
// member that joins later: none is blocked, in the kernel or in hbf list;
// each is an allowlisted scan; the host stays in its fleet, and a real
// scanner afterwards is blocked and shared. What a member may make the
// others protect is bounded; a member that leaves is protected no more;
// and a host restarted while etcd is away protects the members it last
// saw.
func TestForgedScansNeverCutTheFleetOff(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"b", "c", "etcd", "attacker", "scanner"}})
	hostA, hostB, hostC, etcdNS := lab.Host, lab.Peers["b"], lab.Peers["c"], lab.Peers["etcd"]
	attacker, scanner := lab.Peers["attacker"], lab.Peers["scanner"]
	etcd := etcdtest.Start(t, etcdtest.Options{NS: etcdNS, Addr: etcdNS.Addr4})
	// C has an address of its own beyond the segment, which it publishes.
	cExtra := netip.MustParseAddr("198.51.100.7")
	ip(t, hostC, "addr", "add", cExtra.String()+"/32", "dev", netlab.Iface)
	ip(t, hostA, "route", "add", cExtra.String()+"/32", "dev", netlab.Iface)
	args := func(name string) []string {
		return []string{"--log-format", "json", "--fleet-etcd", etcd.Endpoint(), "--node-name", name,
			"--fleet-member-prefixes", "192.0.2.0/24,2001:db8::/64,198.51.100.0/24"}
	}
	serveHTTP(t, hostA, 8080)
	a := startDaemon(t, lab, args("a")...)
	b := startDaemonOn(t, hostB, args("b")...)
	eventually(t, "A protects B and etcd", func() bool {
		return a.allowed(host(hostB.Addr4), "member") && a.allowed(host(hostB.Addr6), "member") &&
			a.allowed(host(etcdNS.Addr4), "etcd")
	})
	if out := a.mustCLI("why", etcdNS.Addr4.String()); !strings.Contains(out, "an etcd endpoint of the fleet") {
		t.Errorf("hbf why %s:\n%s", etcdNS.Addr4, out)
	}

	forged := func(src netip.Addr) {
		t.Helper()
		if src.Is6() {
			spoofScan6(t, attacker, src, hostA.Addr6)
		} else {
			spoofScan(t, attacker, src, hostA.Addr4)
		}
		if !a.scanEvent(src) {
			t.Errorf("the forged scan from %s was not allowlisted", src)
		}
	}
	for _, src := range []netip.Addr{etcdNS.Addr4, hostB.Addr4, hostB.Addr6} {
		forged(src)
	}
	// A member that joins after A started is protected from then on.
	c := startDaemonOn(t, hostC, args("c")...)
	eventually(t, "A protects C", func() bool {
		return a.allowed(host(hostC.Addr4), "member") && a.allowed(host(cExtra), "member")
	})
	forged(hostC.Addr4)
	for _, src := range []netip.Addr{etcdNS.Addr4, hostB.Addr4, hostB.Addr6, hostC.Addr4} {
		if a.blocked(host(src)) {
			t.Errorf("%s was blocked by a forged scan", src)
		}
	}
	if n := scrape(t, a).value(t, "hbf_port_scans_allowlisted_total", ""); n != 4 {
		t.Errorf("hbf_port_scans_allowlisted_total %v, want 4", n)
	}
	if st := a.fleetStatus(); !st.Connected || len(st.Members) != 3 {
		t.Errorf("A after the forged scans: %+v", st)
	}

	// A real scanner afterwards: blocked on A, shared with B.
	spoofScan(t, scanner, scanner.Addr4, hostA.Addr4)
	a.blockEvent(scanner.Addr4.String(), "port scan")
	b.blockEvent(scanner.Addr4.String(), "(fleet: a)")

	// A member publishing what no member may make the others protect.
	var addrs []string
	for i := range 17 {
		addrs = append(addrs, fmt.Sprintf("%q", fmt.Sprintf("192.0.2.%d", 200+i)))
	}
	addrs = append(addrs, `"fe80::66"`, `"203.0.113.66"`)
	etcd.MustCtl("put", "/hbf/members/evil", fmt.Sprintf(`{"version":1,"hbf":"x","addrs":[%s],"clock":%q}`,
		strings.Join(addrs, ","), time.Now().UTC().Format(time.RFC3339)))
	eventually(t, "the evil member's refusals counted", func() bool {
		s := scrape(t, a)
		return s.value(t, "hbf_fleet_rejected_total", "member_not_global") == 1 &&
			s.value(t, "hbf_fleet_rejected_total", "member_outside") == 1 &&
			s.value(t, "hbf_fleet_rejected_total", "member_too_many") == 1
	})
	for _, p := range []string{"192.0.2.216/32", "fe80::66/128", "203.0.113.66/32"} {
		if a.allowed(p, "member") {
			t.Errorf("%s, refused, is protected", p)
		}
	}

	// A fleet block of a range holding a member is applied; the member's
	// own entry lets it through.
	b.mustCLI("block", "--fleet", "198.51.100.0/24", "--reason", "a bad neighbourhood")
	eventually(t, "the range applied on A", func() bool { return a.blocked("198.51.100.0/24") })
	if got := hostC.ProbeFrom(context.Background(), cExtra, hostPort(hostA.Addr4, 8080), 2*time.Second); got != "open" {
		t.Errorf("C from %s, inside the blocked range: %s, want open", cExtra, got)
	}

	// C leaves: its address is an ordinary source again.
	if err := c.stop(); err != nil {
		t.Logf("C stopped: %v", err)
	}
	eventuallyWithin(t, 20*time.Second, "C's protection gone", func() bool { return !a.allowed(host(hostC.Addr4), "member") })
	spoofScan(t, attacker, hostC.Addr4, hostA.Addr4)
	a.blockEvent(hostC.Addr4.String(), "port scan")

	// Restarted with etcd down, A protects the members it last saw.
	etcd.Kill()
	a.kill9()
	again := waitReady(t, tryDaemonIn(t, hostA, hbfBin, a.pinPath, a.stateDir, args("a")...))
	if !again.allowed(host(hostB.Addr4), "member") {
		t.Fatalf("restarted without etcd, A does not protect B:\n%s", again.mustCLI("list", "--allowed"))
	}
	// B's scan state survived the restart (its window is on): a member
	// last seen that never scanned shows the protection whole.
	evil := netip.MustParseAddr("192.0.2.200")
	spoofScan(t, attacker, evil, hostA.Addr4)
	if !again.scanEvent(evil) || again.blocked(host(evil)) {
		t.Errorf("restarted without etcd, a forged scan from %s, a member's, blocked it", evil)
	}
}
