package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/hbf-firewall/hbf/internal/netlab"
)

// clientLoop connects from ns to addr every 20 ms until stop is called,
// which returns the attempts and the failures.
func clientLoop(ns *netlab.NS, host netip.Addr, port int) (stop func() (attempts, failures int64)) {
	var a, f atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			a.Add(1)
			if dialOutcome(ns, hostPort(host, port), 2*time.Second) != "open" {
				f.Add(1)
			}
		}
	})
	return func() (int64, int64) {
		close(done)
		wg.Wait()
		return a.Load(), f.Load()
	}
}

// procStatus reads a field of /proc/PID/status, in kB for sizes.
func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + field + `:\s+(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /proc/%d/status", field, pid)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// countersAddUp checks that every packet the program saw was passed or
// dropped with a reason; read while no traffic flows.
func countersAddUp(t *testing.T, d *daemonProc) {
	t.Helper()
	s := scrape(t, d)
	seen, passed := s.value(t, "hbf_packets_total", ""), s.value(t, "hbf_packets_passed_total", "")
	var dropped float64
	for _, m := range s.fams["hbf_packets_dropped_total"].GetMetric() {
		dropped += m.GetCounter().GetValue()
	}
	if seen != passed+dropped {
		t.Errorf("%v packets seen, %v passed + %v dropped = %v: counters do not add up", seen, passed, dropped, passed+dropped)
	}
	t.Logf("counters: %v packets seen = %v passed + %v dropped", seen, passed, dropped)
}

// Bounded SYN floods from a blocked source and from random sources while a
// client connects and a real scanner scans: the client keeps connecting,
// the scanner is blocked, the daemon's memory and goroutines stay flat, and
// every packet is accounted for.
func TestFloodsWhileServing(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "blocked", "spoofer", "scanner"}})
	serveHTTP(t, lab.Host, 8080)
	host := lab.Host.Addr4.String()
	d := startDaemon(t, lab, "--log-connections", "off")
	d.mustCLI("block", lab.Peers["blocked"].Addr4.String())
	pid := d.cmd.Process.Pid
	time.Sleep(time.Second) // past the start's allocations
	rssBefore := procStatus(t, pid, "VmRSS")
	goroutinesBefore := scrape(t, d).value(t, "go_goroutines", "")

	stop := clientLoop(lab.Peers["client"], lab.Host.Addr4, 8080)
	fromBlocked := hpingFlood(t, lab.Peers["blocked"], host, 100_000, "u20")
	fromRandom := hpingFlood(t, lab.Peers["spoofer"], host, 100_000, "u20", "--rand-source")
	time.Sleep(500 * time.Millisecond)
	nmap(t, lab.Peers["scanner"], lab.Host.Addr4, "1-20", "-sS", "-T4")
	sentBlocked, answeredBlocked := fromBlocked()
	sentRandom, _ := fromRandom()
	attempts, failures := stop()

	if failures != 0 {
		t.Errorf("%d of %d client connections failed during the floods", failures, attempts)
	}
	if answeredBlocked != 0 {
		t.Errorf("the blocked source got %d answers to %d SYNs", answeredBlocked, sentBlocked)
	}
	d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, lab.Peers["scanner"].Addr4))
	time.Sleep(500 * time.Millisecond) // the last packets of the client
	countersAddUp(t, d)

	rssAfter := procStatus(t, pid, "VmRSS")
	goroutinesAfter := scrape(t, d).value(t, "go_goroutines", "")
	t.Logf("floods of %d (blocked) and %d (random sources) SYNs, %d client connections: RSS %d -> %d kB, goroutines %v -> %v",
		sentBlocked, sentRandom, attempts, rssBefore, rssAfter, goroutinesBefore, goroutinesAfter)
	if rssAfter > rssBefore+32*1024 {
		t.Errorf("RSS grew from %d to %d kB", rssBefore, rssAfter)
	}
	if goroutinesAfter > goroutinesBefore+4 {
		t.Errorf("goroutines grew from %v to %v", goroutinesBefore, goroutinesAfter)
	}
	if n := scrape(t, d).value(t, "hbf_scan_tracker_full_total", ""); n != 0 {
		t.Errorf("%v attempts went untracked: the flood filled the tracker", n)
	}
}

// With its stdout stalled (a paused pager, a stuck log collector), the
// daemon drops and counts event lines; enforcement and the API carry on,
// and reporting resumes when the reader does.
func TestStalledEventReader(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "flooder", "scanner"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082, 8083)
	host := lab.Host.Addr4
	d := startDaemon(t, lab)
	resume := d.stallStdout()
	defer func() {
		if resume != nil {
			resume()
		}
	}()
	// Every SYN a new connection: far more lines than a pipe and the queue hold.
	wait := hpingFlood(t, lab.Peers["flooder"], host.String(), 60_000, "u20")
	wait()

	start := time.Now()
	if out, code := d.cli("status"); code != 0 {
		t.Errorf("hbf status while the output is stalled: exit %d: %s", code, out)
	}
	t.Logf("hbf status answered in %v with the output stalled", time.Since(start).Round(time.Millisecond))
	for port := 8080; port <= 8083; port++ {
		dialOutcome(lab.Peers["scanner"], hostPort(host, port), 500*time.Millisecond)
	}
	eventually(t, "the scanner listed while the output is stalled", func() bool {
		return findBlock(d.listJSON(), lab.Peers["scanner"].Addr4.String()+"/32", "scan") != nil
	})
	if got := dialOutcome(lab.Peers["client"], hostPort(host, 8080), 2*time.Second); got != "open" {
		t.Errorf("the client while the output is stalled: %s", got)
	}
	if n := scrape(t, d).value(t, "hbf_events_lost_total", ""); n == 0 {
		t.Error("hbf_events_lost_total is 0 after a stalled output")
	}

	resume()
	resume = nil
	if got := dialOutcome(lab.Peers["client"], hostPort(host, 8081), 2*time.Second); got != "open" {
		t.Errorf("the client after the stall: %s", got)
	}
	// The first lines after the stall may still meet a full queue (the
	// writer drains it only as fast as this test reads): connect until one
	// is reported.
	resumed := line(`New connection: %s:\d+ -> %s:8081`, lab.Peers["client"].Addr4, host)
	eventually(t, "a connection reported after the stall", func() bool {
		if len(d.matching(resumed)) > 0 {
			return true
		}
		dialOutcome(lab.Peers["client"], hostPort(host, 8081), 500*time.Millisecond)
		return false
	})
	if !strings.Contains(d.stderrText(), "event lines were dropped") {
		t.Errorf("the drops are not logged:\n%s", d.stderrText())
	}
}

// kill -9, again and again, while a blocked source streams and a client
// connects: nothing of the blocked source passes, no client connection
// fails, and there stays one program, one link, and the pins of one layout.
func TestKill9Loop(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "flooder"}})
	serveHTTP(t, lab.Host, 8080)
	host := lab.Host.Addr4.String()
	d := startDaemon(t, lab, "--detach-on-exit=false")
	d.mustCLI("block", lab.Peers["flooder"].Addr4.String())

	stop := clientLoop(lab.Peers["client"], lab.Host.Addr4, 8080)
	flood := hpingFlood(t, lab.Peers["flooder"], host, 200_000, "u20")
	const kills = 5
	for range kills {
		time.Sleep(200 * time.Millisecond)
		d.kill9()
		d = d.restart(lab)
	}
	sent, answered := flood()
	attempts, failures := stop()
	t.Logf("%d kill -9 and restarts: %d SYNs from the blocked source, %d answered; %d client connections, %d failed",
		kills, sent, answered, attempts, failures)
	if answered != 0 {
		t.Errorf("the blocked source got %d answers", answered)
	}
	if failures != 0 {
		t.Errorf("%d of %d client connections failed", failures, attempts)
	}
	if n := xdpPrograms(t, lab.Host); n != 1 {
		t.Errorf("%d XDP programs on the interface, want 1", n)
	}

	// One link runs the program, and it is the pinned one.
	pinned, err := link.LoadPinnedLink(filepath.Join(d.pinPath, currentLayout, "links", netlab.Iface), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	info, err := pinned.Info()
	if err != nil {
		t.Fatal(err)
	}
	var links int
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		if li, err := it.Link.Info(); err == nil && li.Program == info.Program {
			links++
		}
	}
	if links != 1 {
		t.Errorf("%d links run program %d, want 1: the pinned one", links, info.Program)
	}
	entries, _ := os.ReadDir(d.pinPath)
	if len(entries) != 1 || entries[0].Name() != currentLayout {
		t.Errorf("pin path holds %v, want only %s", entries, currentLayout)
	}
	maps, _ := os.ReadDir(filepath.Join(d.pinPath, currentLayout, "maps"))
	linksPinned, _ := os.ReadDir(filepath.Join(d.pinPath, currentLayout, "links"))
	if len(maps) != pinnedMapCount || len(linksPinned) != 1 {
		t.Errorf("%d map pins and %d link pins, want %d and 1", len(maps), len(linksPinned), pinnedMapCount)
	}
}
