package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// hping starts sending count SYNs to port 8080 of target from ns, 5 µs
// apart at most (a bounded flood: ~30,000 packets a second here); wait
// returns how many it sent.
func hping(t testing.TB, ns *netlab.NS, target string, count int) (wait func() int) {
	t.Helper()
	flood := hpingFlood(t, ns, target, count, "u5")
	return func() int {
		sent, _ := flood()
		return sent
	}
}

// hpingFlood sends count SYNs to port 8080 of target from ns, gap apart at
// most (hping3's -i: u20 is 20 µs), with extra hping3 arguments; wait
// returns how many were sent and how many answers came back.
func hpingFlood(t testing.TB, ns *netlab.NS, target string, count int, gap string, extra ...string) (wait func() (sent, received int)) {
	t.Helper()
	testenv.RequireCommand(t, "hping3")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	args := append([]string{"-S", "-p", "8080", "-i", gap, "-c", strconv.Itoa(count)}, extra...)
	cmd := ns.Command(ctx, "hping3", append(args, target)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	return func() (int, int) {
		defer cancel()
		cmd.Wait() // hping3 exits 1 when nothing answers
		m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("hping3 said:\n%s", out.String())
		}
		sent, _ := strconv.Atoi(m[1])
		received, _ := strconv.Atoi(m[2])
		return sent, received
	}
}

// xdpPrograms counts the XDP programs on the host's interface.
func xdpPrograms(t testing.TB, ns *netlab.NS) int {
	t.Helper()
	out, err := ns.Run(context.Background(), "ip", "-d", "link", "show", netlab.Iface)
	if err != nil {
		t.Fatal(err)
	}
	return len(regexp.MustCompile(`prog/xdp id \d+`).FindAllString(out, -1))
}

// kill9 kills the daemon without letting it clean anything up.
func (d *daemonProc) kill9() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.wait(10 * time.Second)
}

// restart starts a new daemon on the same pins and state.
func (d *daemonProc) restart(lab *netlab.Lab, args ...string) *daemonProc {
	d.t.Helper()
	return waitReady(d.t, tryDaemonAt(d.t, lab, d.pinPath, d.stateDir, append([]string{"--detach-on-exit=false"}, args...)...))
}

// Not one packet from a blocked source passes while no daemon runs, and a
// block the kernel makes meanwhile shows up in the next daemon's list.
func TestKill9KeepsEnforcing(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "flooder", "prober"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082)
	host := lab.Host.Addr4
	flooder, prober := lab.Peers["flooder"], lab.Peers["prober"]

	a := startDaemon(t, lab, "--detach-on-exit=false")
	a.mustCLI("block", flooder.Addr4.String(), "--reason", "flood")
	before := scrape(t, a).value(t, "hbf_packets_dropped_total", "blocked")

	flood := hping(t, flooder, host.String(), 30000)
	time.Sleep(300 * time.Millisecond)
	a.kill9() // in the middle of the flood
	if got := dialOutcome(lab.Peers["client"], hostPort(host, 8080), 5*time.Second); got != "open" {
		t.Errorf("with no daemon the client's connection is %s", got)
	}
	sent := flood()

	b := a.restart(lab)
	after := scrape(t, b).value(t, "hbf_packets_dropped_total", "blocked")
	if dropped := int(after - before); dropped != sent {
		t.Errorf("the flooder sent %d SYNs, %d were dropped: %d got through", sent, dropped, sent-dropped)
	}
	t.Logf("flood of %d SYNs, the daemon killed after 0.3 s: %d dropped", sent, int(after-before))

	// A scan while no daemon runs: the kernel blocks it alone.
	b.kill9()
	for port := 8080; port <= 8083; port++ {
		dialOutcome(prober, hostPort(host, port), time.Second)
	}
	if got := dialOutcome(prober, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("the prober scanned with no daemon and still connects: %s", got)
	}
	c := a.restart(lab)
	blocks := c.listJSON()
	if findBlock(blocks, flooder.Addr4.String()+"/32", "manual") == nil || findBlock(blocks, prober.Addr4.String()+"/32", "scan") == nil {
		t.Errorf("the restarted daemon lists %+v, want the manual and the scan block", blocks)
	}
	if n := xdpPrograms(t, lab.Host); n != 1 {
		t.Errorf("%d XDP programs on the interface, want 1", n)
	}
	links, _ := os.ReadDir(filepath.Join(a.pinPath, currentLayout, "links"))
	if len(links) != 1 {
		t.Errorf("%d pinned links, want 1", len(links))
	}
}

// With the reader stalled, scan events are lost in a full ring; the kernel
// blocks the scanners anyway, and the list is complete afterwards.
func TestRingOverflowListIsComplete(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"flooder", "scanner1", "scanner2", "scanner3"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082)
	host := lab.Host.Addr4
	// A one-second window: the sweep, which notices lost events, runs each second.
	d := startDaemon(t, lab, "--window", "1s")

	d.cmd.Process.Signal(syscall.SIGSTOP)
	// 90,000 new connections from one source to one port: no scan, but an
	// event each, more than the 4 MiB ring holds.
	flood := hping(t, lab.Peers["flooder"], host.String(), 90000)
	flood()
	var scanners []string
	for i := 1; i <= 3; i++ {
		s := lab.Peers[fmt.Sprintf("scanner%d", i)]
		for port := 8080; port <= 8083; port++ {
			dialOutcome(s, hostPort(host, port), 500*time.Millisecond)
		}
		scanners = append(scanners, s.Addr4.String()+"/32")
	}
	d.cmd.Process.Signal(syscall.SIGCONT)

	deadline := time.Now().Add(20 * time.Second)
	for {
		blocks := d.listJSON()
		missing := 0
		for _, s := range scanners {
			if findBlock(blocks, s, "scan") == nil {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 scanners missing from hbf list after the ring overflowed:\n%+v\n%s", missing, blocks, d.stderrText())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if lost := scrape(t, d).value(t, "hbf_events_lost_total", ""); lost == 0 {
		t.Error("no event was lost: the ring did not overflow, the test proves nothing")
	}
	if !strings.Contains(d.stderrText(), "events were lost") {
		t.Errorf("the daemon did not say it reconciled after losing events:\n%s", d.stderrText())
	}
}

// After a reboot (pins gone, store kept) every unexpired block is in the
// kernel before the daemon says it runs; a list file that no longer parses
// is replaced by its last good copy.
func TestRebootRestoresBlocks(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "listed", "manual", "scanner"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082)
	host := lab.Host.Addr4
	list := filepath.Join(t.TempDir(), "blocklist.txt")
	os.WriteFile(list, []byte(lab.Peers["listed"].Addr4.String()+"\n"), 0o600)

	d := startDaemon(t, lab, "--detach-on-exit=false", "--blocklist", list)
	d.mustCLI("block", lab.Peers["manual"].Addr4.String(), "--for", "1h", "--reason", "abuse")
	for port := 8080; port <= 8083; port++ {
		dialOutcome(lab.Peers["scanner"], hostPort(host, port), time.Second)
	}
	d.waitLine(line("Blocked %s for 1h0m0s: port scan", lab.Peers["scanner"].Addr4))
	d.mustCLI("stop")
	d.wait(20 * time.Second)

	// The reboot: no pins, no program, the store stays.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := lab.Host.Run(ctx, hbfBin, "uninstall", "--pin-path", d.pinPath, "--state-dir", d.stateDir, "--socket", d.socket()); err != nil {
		t.Fatal(err)
	}
	if got := dialOutcome(lab.Peers["manual"], hostPort(host, 8080), 5*time.Second); got != "open" {
		t.Fatalf("after the reboot, before hbf: %s", got)
	}
	os.WriteFile(list, []byte("this is not an address\n"), 0o600)

	r := waitReady(t, tryDaemonAt(t, lab, d.pinPath, d.stateDir, "--blocklist", list))
	for _, peer := range []string{"listed", "manual", "scanner"} {
		if got := dialOutcome(lab.Peers[peer], hostPort(host, 8080), time.Second); got != "filtered" {
			t.Errorf("after the reboot the %s source's connection is %s", peer, got)
		}
	}
	if got := dialOutcome(lab.Peers["client"], hostPort(host, 8080), 5*time.Second); got != "open" {
		t.Errorf("after the reboot the client's connection is %s", got)
	}
	blocks := r.listJSON()
	if b := findBlock(blocks, lab.Peers["manual"].Addr4.String()+"/32", "manual"); b == nil || b.Reason != "abuse" || b.Expires.IsZero() {
		t.Errorf("manual block after the reboot: %+v", b)
	}
	if findBlock(blocks, lab.Peers["scanner"].Addr4.String()+"/32", "scan") == nil || findBlock(blocks, lab.Peers["listed"].Addr4.String()+"/32", "file") == nil {
		t.Errorf("blocks after the reboot: %+v", blocks)
	}
	if !strings.Contains(r.stderrText(), "using its last good copy") || !strings.Contains(r.mustCLI("status"), "last good copy, read") {
		t.Errorf("the broken list was not reported:\n%s", r.stderrText())
	}
}

func TestDamagedStoreRecovers(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"manual", "scanner"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082)
	host := lab.Host.Addr4
	manual, scanner := lab.Peers["manual"].Addr4.String()+"/32", lab.Peers["scanner"].Addr4.String()+"/32"

	d := startDaemon(t, lab, "--detach-on-exit=false")
	d.mustCLI("block", lab.Peers["manual"].Addr4.String(), "--reason", "abuse")
	for port := 8080; port <= 8083; port++ {
		dialOutcome(lab.Peers["scanner"], hostPort(host, port), time.Second)
	}
	d.waitLine(line("Blocked %s for 1h0m0s: port scan", lab.Peers["scanner"].Addr4))
	d.mustCLI("stop")
	d.wait(20 * time.Second)
	db := filepath.Join(d.stateDir, "hbf.db")

	// Zero-length: the backup comes back, reasons and all.
	os.Truncate(db, 0)
	d = d.restart(lab)
	if !strings.Contains(d.stderrText(), "zero-length store") || !strings.Contains(d.stderrText(), "restored the backup") {
		t.Errorf("zero-length store:\n%s", d.stderrText())
	}
	if b := findBlock(d.listJSON(), manual, "manual"); b == nil || b.Reason != "abuse" {
		t.Errorf("manual block after restoring the backup: %+v", b)
	}
	d.mustCLI("stop")
	d.wait(20 * time.Second)

	// Corrupt, no backup: what the kernel holds is recovered.
	os.WriteFile(db, []byte(strings.Repeat("not a database ", 4000)), 0o600)
	os.Remove(filepath.Join(d.stateDir, "hbf.db.bak"))
	d = d.restart(lab)
	if !strings.Contains(d.stderrText(), "corrupt store") || !strings.Contains(d.stderrText(), "started an empty store") {
		t.Errorf("corrupt store:\n%s", d.stderrText())
	}
	blocks := d.listJSON()
	if findBlock(blocks, manual, "kernel") == nil || findBlock(blocks, scanner, "scan") == nil {
		t.Errorf("blocks recovered from the kernel: %+v", blocks)
	}
	if st := d.mustCLI("status"); !strings.Contains(st, "corrupt store") {
		t.Errorf("status does not say what was found:\n%s", st)
	}
	d.mustCLI("stop")
	d.wait(20 * time.Second)

	// Unwritable: refused, and the pins keep enforcing.
	if err := unix.Mount(d.stateDir, d.stateDir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(d.stateDir, unix.MNT_DETACH)
	if err := unix.Mount("", d.stateDir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	ro := tryDaemonAt(t, lab, d.pinPath, d.stateDir)
	if err := ro.wait(20 * time.Second); err == nil {
		t.Fatal("started with a read-only state folder")
	}
	if !strings.Contains(ro.stderrText(), "is not writable") || !strings.Contains(ro.stderrText(), "stays in force") {
		t.Errorf("read-only state folder:\n%s", ro.stderrText())
	}
	if got := dialOutcome(lab.Peers["manual"], hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("with the daemon refused, the blocked source's connection is %s", got)
	}
}

// A connection flood cannot fill the disk: lines are limited, the rest
// counted, and the counters stay exact.
func TestConnectionLinesAreRateLimited(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"flooder"}})
	serveHTTP(t, lab.Host, 8080)
	d := startDaemon(t, lab, "--log-connections", "rate=10/s")
	begin := time.Now()
	sent := hping(t, lab.Peers["flooder"], lab.Host.Addr4.String(), 3000)()

	suppressedRe := regexp.MustCompile(timePrefix + `(\d+) connection lines suppressed$`)
	deadline := time.Now().Add(15 * time.Second)
	var lines, suppressed int
	for {
		lines, suppressed = len(d.matching(regexp.MustCompile("New connection"))), 0
		for _, l := range d.matching(suppressedRe) {
			n, _ := strconv.Atoi(suppressedRe.FindStringSubmatch(l)[1])
			suppressed += n
		}
		if lines+suppressed >= sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	seconds := int(time.Since(begin).Seconds()) + 2
	if lines > 10*seconds {
		t.Errorf("%d connection lines in about %d s, want at most 10 a second", lines, seconds)
	}
	counted := scrape(t, d).value(t, "hbf_new_connections_total", "")
	if lines+suppressed != sent || int(counted) != sent {
		t.Errorf("%d SYNs sent: %d lines + %d suppressed, counter %v; want all accounted for", sent, lines, suppressed, counted)
	}
}

// A repeat scanner is blocked longer each time, also when the kernel made
// the block while no daemon ran.
func TestEscalation(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"scanner"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082)
	host, scanner := lab.Host.Addr4, lab.Peers["scanner"]
	scan := func() {
		for port := 8080; port <= 8083; port++ {
			dialOutcome(scanner, hostPort(host, port), 500*time.Millisecond)
		}
	}
	args := []string{"--window", "1s", "--block-duration", "2s", "--escalation", "3s,0", "--detach-on-exit=false"}
	d := startDaemon(t, lab, args...)

	scan()
	d.waitLine(line("Blocked %s for 2s: port scan", scanner.Addr4))
	time.Sleep(2500 * time.Millisecond) // the first block ends, and the window
	scan()
	d.waitLine(line(`Blocked %s for 3s: port scan \(offence 2\)`, scanner.Addr4))
	if b := findBlock(d.listJSON(), scanner.Addr4.String()+"/32", "scan"); b == nil || b.Reason != "port scan (offence 2)" {
		t.Errorf("second block listed as %+v", b)
	}
	time.Sleep(3500 * time.Millisecond)

	// The third offence while no daemon runs: the kernel blocks for 2 s,
	// the next daemon makes it permanent.
	d.kill9()
	scan()
	r := d.restart(lab, args...)
	b := findBlock(r.listJSON(), scanner.Addr4.String()+"/32", "scan")
	if b == nil || b.Reason != "port scan (offence 3)" || !b.Expires.IsZero() {
		t.Fatalf("third block listed as %+v", b)
	}
	time.Sleep(2500 * time.Millisecond) // past the kernel's own 2 s
	if got := dialOutcome(scanner, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("the escalated block ended with the first duration: %s", got)
	}
}
