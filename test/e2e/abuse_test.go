package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// spoofScan sends from ns six SYNs to ports 100-105 of target, claiming to
// come from src (hping3 -a): a scan "from" src.
func spoofScan(t *testing.T, ns *netlab.NS, src, target netip.Addr) {
	t.Helper()
	testenv.RequireCommand(t, "hping3")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, "hping3", "-S", "-a", src.String(), "-p", "++100", "-c", "6", "-i", "u20000", target.String())
	if err != nil && !strings.Contains(out, "packets transmitted") {
		t.Fatalf("hping3 -a %v: %v: %s", src, err, out)
	}
}

// spoofScan6 is spoofScan for IPv6, which hping3 lacks: nmap -S.
func spoofScan6(t *testing.T, ns *netlab.NS, src, target netip.Addr) {
	t.Helper()
	nmap(t, ns, target, "100-105", "-S", src.String(), "-e", netlab.Iface, "-sS", "-T5", "--max-retries", "0")
}

func (d *daemonProc) blocked(p string) bool {
	d.t.Helper()
	return slices.ContainsFunc(d.listJSON(), func(b api.Block) bool { return b.Prefix.String() == p })
}

// allowed reports whether the allowlist holds exactly p, for origin.
func (d *daemonProc) allowed(p, origin string) bool {
	d.t.Helper()
	var allows []api.Allow
	if err := json.Unmarshal([]byte(d.mustCLI("list", "--allowed", "-o", "json")), &allows); err != nil {
		d.t.Fatal(err)
	}
	return slices.ContainsFunc(allows, func(a api.Allow) bool { return a.Prefix.String() == p && a.Origin == origin })
}

func ip(t *testing.T, ns *netlab.NS, args ...string) {
	t.Helper()
	if out, err := ns.Run(context.Background(), "ip", args...); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// Scans spoofed from what hbf must never block (the host's own addresses,
// loopback, the default gateways, the DNS resolvers, an address added while
// it runs) are reported as allowlisted and block nothing; an address the
// host gave up is no longer protected.
func TestSpoofedScansNeverBlockTheHostsNeighbourhood(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"attacker"}})
	host, attacker := lab.Host, lab.Peers["attacker"]
	gw4, gw6 := netip.MustParseAddr("192.0.2.254"), netip.MustParseAddr("2001:db8::fe")
	ip(t, host, "route", "add", "default", "via", gw4.String())
	ip(t, host, "-6", "route", "add", "default", "via", gw6.String())
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 198.51.100.53\nnameserver 2001:db8:53::53\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, lab, "--resolv-conf", resolv)

	spoofed := func(src netip.Addr) {
		t.Helper()
		target := host.Addr4
		if src.Is6() {
			target = host.Addr6
			spoofScan6(t, attacker, src, target)
		} else {
			spoofScan(t, attacker, src, target)
		}
		d.waitLine(line(`Port scan detected: %s -> %s on ports .* \(allowlisted, not blocked\)`, src, target))
	}
	protected := []netip.Addr{host.Addr4, netip.MustParseAddr("127.0.0.1"), gw4, gw6,
		netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("2001:db8:53::53")}
	for _, src := range protected {
		spoofed(src)
	}

	// Followed live: an address the host takes, and a resolver edited in.
	added := netip.MustParseAddr("203.0.113.9")
	ip(t, host, "addr", "add", added.String()+"/32", "dev", netlab.Iface)
	if err := os.WriteFile(resolv, []byte("nameserver 198.51.100.54\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new resolver protected", func() bool {
		return d.allowed("198.51.100.54/32", "resolver") && d.allowed(added.String()+"/32", "host")
	})
	for _, src := range []netip.Addr{added, netip.MustParseAddr("198.51.100.54")} {
		spoofed(src)
	}
	for _, src := range append(protected, added) {
		if p := netip.PrefixFrom(src, src.BitLen()).String(); d.blocked(p) {
			t.Errorf("%s was blocked by a spoofed scan", p)
		}
	}
	if n := scrape(t, d).value(t, "hbf_port_scans_allowlisted_total", ""); n != float64(len(protected)+2) {
		t.Errorf("hbf_port_scans_allowlisted_total %v, want %d", n, len(protected)+2)
	}

	// Given up: the address and the old resolver are ordinary sources again.
	ip(t, host, "addr", "del", added.String()+"/32", "dev", netlab.Iface)
	eventually(t, "the removed address unprotected", func() bool {
		return !d.allowed(added.String()+"/32", "host")
	})
	for _, src := range []netip.Addr{added, netip.MustParseAddr("198.51.100.53")} {
		spoofScan(t, attacker, src, host.Addr4)
		d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, src))
	}
}

// Decoys (nmap -D) make every decoy a scanner; the budget of blocks per
// minute stops them from buying a block each. Past it scans are reported,
// counted and logged, and the ports stay shut to them.
func TestDecoyScansAreRateLimited(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"attacker"}})
	host, attacker := lab.Host, lab.Peers["attacker"]
	serveHTTP(t, host, 8080)
	d := startDaemon(t, lab, "--scan-blocks-per-minute", "3")

	var decoys []string
	for i := range 10 {
		decoys = append(decoys, fmt.Sprintf("203.0.113.%d", 10+i))
	}
	nmap(t, attacker, host.Addr4, "100-107", "-sS", "-T5", "--max-retries", "0",
		"-D", strings.Join(append(decoys, "ME"), ","))

	scanners := len(decoys) + 1
	eventually(t, "every decoy reported", func() bool {
		return len(d.matching(regexp.MustCompile(`Port scan detected: `))) == scanners
	})
	limited := d.matching(regexp.MustCompile(`\(block rate limit reached: not blocked\)`))
	if len(limited) != scanners-3 {
		t.Errorf("%d scans reported rate-limited, want %d", len(limited), scanners-3)
	}
	s := scrape(t, d)
	if n := s.value(t, "hbf_scan_blocks_total", ""); n != 3 {
		t.Errorf("hbf_scan_blocks_total %v, want 3", n)
	}
	if n := s.value(t, "hbf_scan_blocks_rate_limited_total", ""); n != float64(scanners-3) {
		t.Errorf("hbf_scan_blocks_rate_limited_total %v, want %d", n, scanners-3)
	}
	if n := len(d.listJSON()); n != 3 {
		t.Errorf("%d blocks, want 3", n)
	}
	if !strings.Contains(d.stderrText(), "budget of scan blocks is spent") {
		t.Error("hitting the limit was not logged")
	}
}

// An off-link IPv6 scanner rotating addresses in its /64 is one scanner,
// blocked with its prefix; on-link neighbours are counted one by one, so
// one's scan leaves the others alone.
func TestIPv6ScannerRotatingItsPrefix(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"rotator", "neighbour"}})
	host, rotator, neighbour := lab.Host, lab.Peers["rotator"], lab.Peers["neighbour"]
	ports := []int{8080, 8081, 8082, 8083, 8084}
	serveHTTP(t, host, ports...)
	var rotating, neighbours []netip.Addr
	for i := range 5 {
		a := netip.MustParseAddr("2001:db8:ff::" + strconv.Itoa(10+i))
		rotating = append(rotating, a)
		ip(t, rotator, "addr", "add", a.String()+"/64", "dev", netlab.Iface, "nodad")
		n := netip.MustParseAddr("2001:db8::a" + strconv.Itoa(i))
		neighbours = append(neighbours, n)
		ip(t, neighbour, "addr", "add", n.String()+"/64", "dev", netlab.Iface, "nodad")
	}
	ip(t, host, "-6", "route", "add", "2001:db8:ff::/64", "via", rotator.Addr6.String())
	ip(t, rotator, "-6", "route", "add", "default", "via", host.Addr6.String())
	d := startDaemon(t, lab)
	ctx := context.Background()

	// Neighbours: five addresses, a port each, all connect; then one scans.
	for i, src := range neighbours {
		if got := neighbour.ProbeFrom(ctx, src, hostPort(host.Addr6, ports[i]), 2*time.Second); got != "open" {
			t.Fatalf("neighbour %v -> port %d: %s, want open", src, ports[i], got)
		}
	}
	for _, port := range ports[:4] {
		neighbour.ProbeFrom(ctx, neighbours[0], hostPort(host.Addr6, port), 500*time.Millisecond)
	}
	d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, neighbours[0]))
	if got := neighbour.ProbeFrom(ctx, neighbours[1], hostPort(host.Addr6, ports[0]), 2*time.Second); got != "open" {
		t.Errorf("another neighbour after one's block: %s, want open", got)
	}

	// Off-link: a port from each address of one /64.
	for i, src := range rotating[:4] {
		want := "open"
		if i == 3 {
			want = "filtered"
		}
		if got := rotator.ProbeFrom(ctx, src, hostPort(host.Addr6, ports[i]), time.Second); got != want {
			t.Errorf("rotating source %v -> port %d: %s, want %s", src, ports[i], got, want)
		}
	}
	d.waitLine(line(`Port scan detected: %s -> %s on ports 8080,8081,8082,8083 \(counted over 2001:db8:ff::/64\)`, rotating[3], host.Addr6))
	d.waitLine(line(`Blocked 2001:db8:ff::/64 for 1h0m0s: port scan`))
	if got := rotator.ProbeFrom(ctx, rotating[4], hostPort(host.Addr6, ports[0]), time.Second); got != "filtered" {
		t.Errorf("a fresh address of the blocked /64: %s, want filtered", got)
	}
	if !d.blocked("2001:db8:ff::/64") {
		t.Errorf("hbf list lacks 2001:db8:ff::/64: %v", d.listJSON())
	}
}
