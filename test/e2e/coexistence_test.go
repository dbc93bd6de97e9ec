package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/netlab"
)

// xdp-tools' xdp-filter holds the interface's XDP hook and hbf runs at TC
// ingress through TCX, which --attach auto picks: both enforce at once.
// Unloading xdp-filter leaves hbf enforcing; the next start, on the XDP
// hook now free, moves hbf to XDP and detaches its TCX program only then.
func TestTCXBesideXDPFilter(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "filtered", "scanner"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082, 8083, 8084)
	host, client, filtered, scanner := lab.Host.Addr4, lab.Peers["client"], lab.Peers["filtered"], lab.Peers["scanner"]
	xdp := xdpFilter(t, lab.Host)
	if out, err := xdp("ip", filtered.Addr4.String(), "--mode", "src"); err != nil {
		t.Fatalf("xdp-filter ip: %v: %s", err, out)
	}

	d := startDaemon(t, lab, "--attach", "auto", "--detach-on-exit=false")
	if st := d.status(); len(st.Interfaces) != 1 || st.Interfaces[0].Mode != "tcx" {
		t.Fatalf("--attach auto beside xdp-filter: interfaces %+v, want %s in tcx", st.Interfaces, netlab.Iface)
	}
	if n := xdpPrograms(t, lab.Host); n != 1 {
		t.Errorf("%d XDP programs on the interface, want xdp-filter's alone", n)
	}
	// Status shows the whole chain: xdp-filter's program at XDP, hbf's at
	// the head of TC ingress.
	if i := d.status().Interfaces[0]; i.Hook != "tcx" || i.XDP == nil || i.XDP.HBF || !strings.HasPrefix(i.XDP.Name, "xdp") ||
		len(i.TCX) != 1 || !i.TCX[0].HBF || i.TCX[0].Name != "hbf_tc" {
		t.Errorf("status of %s: %+v (xdp %+v, tcx %+v), want xdp-filter at XDP and hbf_tc at TC", i.Name, i, i.XDP, i.TCX)
	}
	if out := d.mustCLI("status"); !strings.Contains(out, "TCX hbf_tc (") {
		t.Errorf("hbf status does not show the chain:\n%s", out)
	}

	if got := dialOutcome(client, hostPort(host, 8080), 2*time.Second); got != "open" {
		t.Errorf("the client: %s, want open", got)
	}
	d.waitLine(line(`New connection: %s:\d+ -> %s:8080`, client.Addr4, host))
	if got := dialOutcome(filtered, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("the address xdp-filter drops: %s, want filtered", got)
	}
	learnt := 0
	for port := 8080; port <= 8084; port++ {
		if dialOutcome(scanner, hostPort(host, port), 500*time.Millisecond) == "open" {
			learnt++
		}
	}
	d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, scanner.Addr4))
	if learnt > 3 {
		t.Errorf("the scanner learnt %d ports, want at most 3", learnt)
	}

	// A program put ahead of hbf at TC ingress: the watchdog moves hbf
	// back to the head, counts it and keeps the other program.
	ahead := tcxPass(t, lab.Host)
	eventually(t, "hbf back at the head", func() bool { return d.status().Counters["repairs_head"] == 1 })
	if i := d.status().Interfaces[0]; len(i.TCX) != 2 || !i.TCX[0].HBF || i.TCX[1].ID != ahead {
		t.Errorf("TC ingress after the move: %+v, want hbf_tc first, then the other program (%d)", i.TCX, ahead)
	}
	if got := dialOutcome(scanner, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("after the move to the head the scanner: %s, want filtered", got)
	}

	// xdp-filter unloaded: its address passes, hbf still blocks.
	if out, err := xdp("unload", "--all"); err != nil {
		t.Fatalf("xdp-filter unload: %v: %s", err, out)
	}
	if got := dialOutcome(filtered, hostPort(host, 8080), 2*time.Second); got != "open" {
		t.Errorf("after xdp-filter's unload its address: %s, want open", got)
	}
	if got := dialOutcome(scanner, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("after xdp-filter's unload the scanner: %s, want filtered", got)
	}

	// The next start finds the XDP hook free: hbf moves there, and its
	// TCX link goes only once the XDP one enforces.
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	next := d.restart(lab, "--attach", "auto")
	if st := next.status(); len(st.Interfaces) != 1 || st.Interfaces[0].Mode == "tcx" {
		t.Errorf("restarted with the XDP hook free: interfaces %+v, want XDP", st.Interfaces)
	}
	if n := xdpPrograms(t, lab.Host); n != 1 {
		t.Errorf("%d XDP programs on the interface, want hbf's", n)
	}
	if _, err := os.Stat(filepath.Join(d.pinPath, currentLayout, "tcx-links", netlab.Iface)); !os.IsNotExist(err) {
		t.Errorf("the TCX link is still pinned after the move to XDP: %v", err)
	}
	if got := dialOutcome(scanner, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("after the move to XDP the scanner: %s, want filtered", got)
	}
	if got := dialOutcome(client, hostPort(host, 8080), 2*time.Second); got != "open" {
		t.Errorf("after the move to XDP the client: %s, want open", got)
	}
}

// The core checks in TCX mode: connections reported over IPv4 and IPv6, a
// SYN scan and a stealth scan blocked with at most N ports learnt, a
// blocklist enforced; killed with -9, the pinned TCX link keeps enforcing,
// and the next daemon adopts it.
func TestTCXCore(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "scanner", "stealthy", "listed"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082, 8083)
	host, client := lab.Host, lab.Peers["client"]
	list := filepath.Join(t.TempDir(), "blocklist")
	if err := os.WriteFile(list, []byte(lab.Peers["listed"].Addr4.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, lab, "--attach", "tcx", "--blocklist", list, "--detach-on-exit=false")
	if st := d.status(); len(st.Interfaces) != 1 || st.Interfaces[0].Mode != "tcx" {
		t.Fatalf("interfaces %+v, want %s in tcx", st.Interfaces, netlab.Iface)
	}

	for _, dst := range []netip.Addr{host.Addr4, host.Addr6} {
		if got := dialOutcome(client, hostPort(dst, 8080), 2*time.Second); got != "open" {
			t.Errorf("the client to %s: %s, want open", dst, got)
		}
	}
	d.waitLine(line(`New connection: %s:\d+ -> %s:8080`, client.Addr4, host.Addr4))
	d.waitLine(line(`New connection: \[%s\]:\d+ -> \[%s\]:8080`, client.Addr6, host.Addr6))

	if got := learned(nmap(t, lab.Peers["scanner"], host.Addr4, "8080-8089", "-sS", "-T5", "--max-retries", "1")); len(got) > maxPorts {
		t.Errorf("a SYN scan learnt ports %v, want at most %d", got, maxPorts)
	}
	d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, lab.Peers["scanner"].Addr4))
	for port, s := range nmap(t, lab.Peers["stealthy"], host.Addr4, "8080-8089", "-sF", "-T5", "--max-retries", "1") {
		if s == "closed" {
			t.Errorf("a FIN scan saw port %d closed", port)
		}
	}
	if got := dialOutcome(lab.Peers["listed"], hostPort(host.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("the listed address: %s, want filtered", got)
	}
	if m := scrape(t, d); m.value(t, "hbf_packets_dropped_total", "stealth") < maxPorts+1 {
		t.Errorf("stealth drops %v, want at least %d", m.value(t, "hbf_packets_dropped_total", "stealth"), maxPorts+1)
	}

	d.kill9()
	if got := dialOutcome(lab.Peers["scanner"], hostPort(host.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("with no daemon the scanner: %s, want filtered", got)
	}
	if got := dialOutcome(client, hostPort(host.Addr4, 8080), 2*time.Second); got != "open" {
		t.Errorf("with no daemon the client: %s, want open", got)
	}
	next := d.restart(lab, "--attach", "tcx", "--blocklist", list)
	if st := next.status(); len(st.Interfaces) != 1 || st.Interfaces[0].Mode != "adopted" {
		t.Errorf("restarted: interfaces %+v, want the pinned TCX link adopted", st.Interfaces)
	}
	if got := dialOutcome(lab.Peers["listed"], hostPort(host.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("after the restart the listed address: %s, want filtered", got)
	}
	if n := xdpPrograms(t, lab.Host); n != 0 {
		t.Errorf("%d XDP programs on the interface, want none in TCX mode", n)
	}

	// hbf uninstall removes the TCX link and the pins.
	if out := next.mustCLI("uninstall"); !strings.Contains(out, "enforcement removed") {
		t.Errorf("uninstall said %q", out)
	}
	next.wait(20 * time.Second)
	if _, err := os.Stat(d.pinPath); !os.IsNotExist(err) {
		t.Errorf("pins left after uninstall: %v", err)
	}
	if got := dialOutcome(lab.Peers["listed"], hostPort(host.Addr4, 8080), 2*time.Second); got != "open" {
		t.Errorf("after uninstall the listed address: %s, want open", got)
	}
	var chain dataplane.Chain
	if err := host.Do(func() (err error) { chain, err = dataplane.ChainOf(netlab.Iface); return err }); err != nil {
		t.Fatal(err)
	}
	if chain.XDP != nil || len(chain.TCX) != 0 {
		t.Errorf("after uninstall the interface runs %+v", chain)
	}
}

// tcxPass attaches, from the test, a program that passes everything at the
// head of the host interface's TC ingress: another tool's, put ahead of
// hbf. It returns the program's id.
func tcxPass(t *testing.T, ns *netlab.NS) uint32 {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, AttachType: ebpf.AttachTCXIngress, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}, // TCX_NEXT
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	if err := ns.Do(func() error {
		ifc, err := netInterface(netlab.Iface)
		if err != nil {
			return err
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifc, Program: prog, Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
		if err == nil {
			t.Cleanup(func() { l.Close() })
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return uint32(id)
}

// Changing --attach across a restart, under a flood from a blocked source:
// the new hook's program is attached before the old one goes, so not one
// packet of it is answered, and each is dropped exactly once.
func TestAttachSwitchUnderFlood(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"flooder", "client"}})
	serveHTTP(t, lab.Host, 8080)
	flooder := lab.Peers["flooder"]
	d := startDaemon(t, lab, "--attach", "xdp", "--detach-on-exit=false")
	d.mustCLI("block", flooder.Addr4.String(), "--reason", "flood")
	for _, to := range []string{"tcx", "xdp"} {
		before := scrape(t, d).value(t, "hbf_packets_dropped_total", "blocked")
		flood := hpingFlood(t, flooder, lab.Host.Addr4.String(), 100000, "u20")
		time.Sleep(200 * time.Millisecond)
		if err := d.stop(); err != nil {
			t.Fatal(err)
		}
		d = d.restart(lab, "--attach", to)
		switched := time.Now()
		sent, received := flood()
		if time.Since(switched) < 100*time.Millisecond {
			t.Errorf("the flood ended before the switch to %s: make it longer", to)
		}
		if st := d.status(); len(st.Interfaces) != 1 || st.Interfaces[0].Hook != to {
			t.Errorf("after the switch to %s: interfaces %+v", to, st.Interfaces)
		}
		dropped := int(scrape(t, d).value(t, "hbf_packets_dropped_total", "blocked") - before)
		t.Logf("switch to %s under a flood of %d SYNs: %d dropped, %d answered", to, sent, dropped, received)
		if received != 0 || dropped != sent {
			t.Errorf("switch to %s: %d sent, %d dropped, %d answered: want every one dropped once, none answered", to, sent, dropped, received)
		}
		if got := dialOutcome(lab.Peers["client"], hostPort(lab.Host.Addr4, 8080), 2*time.Second); got != "open" {
			t.Errorf("after the switch to %s the client: %s, want open", to, got)
		}
	}
}

// A second hbf, with pins of its own, finds the first one's program on
// the XDP hook: its refusal names that hbf's pin path and what to do.
func TestAnotherHBFIsRecognised(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{})
	first := startDaemon(t, lab)
	second := tryDaemon(t, lab, "--metrics-addr", "127.0.0.1:9718")
	if err := second.wait(30 * time.Second); err == nil {
		t.Fatal("a second hbf started on the interface of the first")
	}
	refused := second.stderrText()
	for _, want := range []string{"another hbf runs there", "pins in " + first.pinPath, "--pin-path " + first.pinPath} {
		if !strings.Contains(refused, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, refused)
		}
	}
}

// hbf in TCX mode stopped (its enforcement removed) beside xdp-filter:
// xdp-filter goes on dropping its address, and nothing of hbf's stays.
func TestXDPFilterOutlivesHBF(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "filtered"}})
	serveHTTP(t, lab.Host, 8080)
	xdp := xdpFilter(t, lab.Host)
	if out, err := xdp("ip", lab.Peers["filtered"].Addr4.String(), "--mode", "src"); err != nil {
		t.Fatalf("xdp-filter ip: %v: %s", err, out)
	}
	d := startDaemon(t, lab, "--attach", "tcx") // removes its enforcement on stop
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if got := dialOutcome(lab.Peers["filtered"], hostPort(lab.Host.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("hbf gone, the address xdp-filter drops: %s, want filtered", got)
	}
	if got := dialOutcome(lab.Peers["client"], hostPort(lab.Host.Addr4, 8080), 2*time.Second); got != "open" {
		t.Errorf("hbf gone, the client: %s, want open", got)
	}
	var chain dataplane.Chain
	if err := lab.Host.Do(func() (err error) { chain, err = dataplane.ChainOf(netlab.Iface); return err }); err != nil {
		t.Fatal(err)
	}
	if chain.XDP == nil || len(chain.TCX) != 0 {
		t.Errorf("hbf gone, the interface runs %+v (xdp %+v): want xdp-filter alone", chain, chain.XDP)
	}
}

// At TC a frame's headers may lie outside the socket buffer's linear part:
// hbf pulls them in, and decides as on a linear frame. Frames of 6 kB
// whose first 14 bytes alone are linear: a blocked source is dropped as
// blocked (not as cut short), and a SYN of another is read and reported.
func TestTCXPullsHeadersIn(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"sender"}})
	d := startDaemon(t, lab, "--attach", "tcx")
	d.mustCLI("block", "203.0.113.66")
	tx := newFrameSender(t, lab)
	tx.splitHeaders(t, lab, 14)
	host := lab.Host.Addr4

	const n = 20
	before := scrape(t, d)
	for i := range n {
		tx.send(t, nil, netip.MustParseAddr("203.0.113.66"), host, uint16(41000+i), 8080)
	}
	eventually(t, "every frame of the blocked source dropped", func() bool {
		return scrape(t, d).value(t, "hbf_packets_dropped_total", "blocked")-before.value(t, "hbf_packets_dropped_total", "blocked") >= n
	})
	after := scrape(t, d)
	for reason, want := range map[string]float64{"blocked": n, "malformed": 0} {
		if got := after.value(t, "hbf_packets_dropped_total", reason) - before.value(t, "hbf_packets_dropped_total", reason); got != want {
			t.Errorf("%v drops for %s, want %v", got, reason, want)
		}
	}
	src := netip.MustParseAddr("198.51.100.40")
	tx.send(t, nil, src, host, 42000, 9000)
	d.waitLine(line(`New connection: %s:42000 -> %s:9000`, src, host))
}
