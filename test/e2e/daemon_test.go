package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

const maxPorts = 3

func TestConnectionsAreReported(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client"}})
	serveHTTP(t, lab.Host, 8080)
	d := startDaemon(t, lab)
	client := lab.Peers["client"]
	testenv.RequireCommand(t, "curl")

	curl(t, client, fmt.Sprintf("http://%s:8080/", lab.Host.Addr4))
	d.waitLine(regexp.MustCompile(timePrefix + `New connection: ` + regexp.QuoteMeta(client.Addr4.String()) +
		`:\d+ -> ` + regexp.QuoteMeta(lab.Host.Addr4.String()) + `:8080$`))

	curl(t, client, fmt.Sprintf("http://[%s]:8080/", lab.Host.Addr6))
	d.waitLine(regexp.MustCompile(timePrefix + `New connection: \[` + regexp.QuoteMeta(client.Addr6.String()) +
		`\]:\d+ -> \[` + regexp.QuoteMeta(lab.Host.Addr6.String()) + `\]:8080$`))

	if n := len(d.matching(regexp.MustCompile("New connection"))); n != 2 {
		t.Errorf("%d connection lines for 2 connections:\n%s", n, strings.Join(d.output(), "\n"))
	}
}

func TestNmapScanIsBlocked(t *testing.T) {
	for _, tc := range []struct {
		name string
		v6   bool
		mode string
	}{
		{"IPv4", false, "auto"},
		{"IPv6", true, "auto"},
		{"IPv4 generic XDP", false, "generic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lab := newLab(t, netlab.Options{Peers: []string{"client", "scanner"}})
			serveHTTP(t, lab.Host, 8080, 8081, 8082)
			d := startDaemon(t, lab, "--xdp-mode", tc.mode)
			client, scanner := lab.Peers["client"], lab.Peers["scanner"]
			host, src := lab.Host.Addr4, scanner.Addr4
			if tc.v6 {
				host, src = lab.Host.Addr6, scanner.Addr6
			}

			states := nmap(t, scanner, host, "8080-8089,9000-9011", "-sS", "-T4", "--max-retries", "1")
			got := learned(states)
			t.Logf("nmap learned the state of %d of %d ports: %v", len(got), len(states), got)
			if len(states) != 22 || len(got) > maxPorts {
				t.Errorf("nmap learned %d ports %v of %d scanned, want at most %d", len(got), got, len(states), maxPorts)
			}

			scan := d.waitLine(line(`Port scan detected: %s -> %s on ports [0-9,]+`, src, host))
			ports := strings.Split(scan[strings.LastIndex(scan, " ")+1:], ",")
			if len(ports) != maxPorts+1 {
				t.Errorf("scan line names %d ports, want %d: %s", len(ports), maxPorts+1, scan)
			}
			d.waitLine(line("Blocked %s for 1h0m0s: port scan", src))

			if got := dialOutcome(scanner, hostPort(host, 8080), 2*time.Second); got != "filtered" {
				t.Errorf("scanner's later connection: %s, want it to time out", got)
			}
			if got := dialOutcome(client, hostPort(host, 8080), 5*time.Second); got != "open" {
				t.Errorf("client's connection: %s, want open", got)
			}
			if n := len(d.matching(regexp.MustCompile("Port scan detected"))); n != 1 {
				t.Errorf("%d scan lines, want 1", n)
			}
		})
	}
}

// Several scanners' threads at once, over a host interface with four
// receive queues: the kernel handles their SYNs on several CPUs.
func TestConcurrentScansOnMultiQueue(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "scanner"}, Queues: 4})
	serveHTTP(t, lab.Host, 8080, 8081, 8082)
	d := startDaemon(t, lab)
	scanner := lab.Peers["scanner"]
	host := lab.Host.Addr4

	var mu sync.Mutex
	learnedPorts := map[int]bool{}
	var wg sync.WaitGroup
	// Four nmap processes over distinct ranges...
	for i := range 4 {
		wg.Go(func() {
			ports := fmt.Sprintf("%d-%d", 8080+i*5, 8084+i*5)
			for _, p := range learned(nmap(t, scanner, host, ports, "-sS", "-T5", "--max-retries", "1")) {
				mu.Lock()
				learnedPorts[p] = true
				mu.Unlock()
			}
		})
	}
	// ...and 32 concurrent connects through the scanner's own TCP stack.
	for i := range 32 {
		wg.Go(func() {
			port := 9000 + i
			if outcome := dialOutcome(scanner, hostPort(host, port), 3*time.Second); outcome != "filtered" {
				mu.Lock()
				learnedPorts[port] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	var ports []int
	for p := range learnedPorts {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	t.Logf("all scanners together learned %d ports: %v", len(ports), ports)
	if len(ports) > maxPorts {
		t.Errorf("scanners learned %d ports %v, want at most %d", len(ports), ports, maxPorts)
	}
	d.waitLine(line("Blocked %s for 1h0m0s: port scan", scanner.Addr4))
	if n := len(d.matching(regexp.MustCompile("Port scan detected"))); n != 1 {
		t.Errorf("%d scan lines, want exactly 1:\n%s", n, strings.Join(d.output(), "\n"))
	}
	if got := dialOutcome(lab.Peers["client"], hostPort(host, 8080), 5*time.Second); got != "open" {
		t.Errorf("client's connection: %s, want open", got)
	}
}

func TestStealthScansSeeNothingClosed(t *testing.T) {
	t.Parallel()
	scans := []string{"-sX", "-sF", "-sN"}
	lab := newLab(t, netlab.Options{Peers: []string{"xmas", "fin", "null"}})
	serveHTTP(t, lab.Host, 8080)
	d := startDaemon(t, lab)
	for i, peer := range []string{"xmas", "fin", "null"} {
		states := nmap(t, lab.Peers[peer], lab.Host.Addr4, "8080-8089", scans[i], "-T4", "--max-retries", "1")
		for port, s := range states {
			if s == "closed" {
				t.Errorf("nmap %s saw port %d closed", scans[i], port)
			}
		}
		if len(states) != 10 {
			t.Errorf("nmap %s reported %d ports, want 10", scans[i], len(states))
		}
	}
	m := scrape(t, d)
	if got := m.value(t, "hbf_packets_dropped_total", "stealth"); got < 3*(maxPorts+1) {
		t.Errorf("stealth drops %v, want at least %d (each probe until the block)", got, 3*(maxPorts+1))
	}
	if got := m.value(t, "hbf_port_scans_detected_total", ""); got != 3 {
		t.Errorf("%v scans detected, want 3", got)
	}
}

func TestMetricsMatchTraffic(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "scanner"}})
	serveHTTP(t, lab.Host, 8080, 8081)
	d := startDaemon(t, lab)
	client, scanner := lab.Peers["client"], lab.Peers["scanner"]

	const conns = 5
	for range conns {
		if got := dialOutcome(client, hostPort(lab.Host.Addr4, 8080), 5*time.Second); got != "open" {
			t.Fatalf("client connection: %s", got)
		}
	}
	// The scanner: 2 ports (open, open), then 2 closed ones: the 4th port
	// crosses the threshold and is dropped.
	for _, port := range []int{8080, 8081, 9000} {
		if got := dialOutcome(scanner, hostPort(lab.Host.Addr4, port), 5*time.Second); got == "filtered" {
			t.Fatalf("scanner port %d filtered before the threshold", port)
		}
	}
	if got := dialOutcome(scanner, hostPort(lab.Host.Addr4, 9001), time.Second); got != "filtered" {
		t.Fatalf("scanner's 4th port: %s, want filtered", got)
	}
	d.waitLine(line("Blocked %s for 1h0m0s: port scan", scanner.Addr4))
	dialOutcome(scanner, hostPort(lab.Host.Addr4, 8080), 500*time.Millisecond) // dropped: blocked

	m := scrape(t, d)
	for _, c := range []struct {
		name, reason string
		want         float64
	}{
		{"hbf_new_connections_total", "", conns + 3},
		{"hbf_port_scans_detected_total", "", 1},
		{"hbf_blocked_sources", "", 1},
		{"hbf_packets_dropped_total", "scan", 1},
		{"hbf_events_lost_total", "", 0},
		{"hbf_packets_dropped_total", "malformed", 0},
		{"hbf_build_info", "", 1},
	} {
		if got := m.value(t, c.name, c.reason); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.reason, got, c.want)
		}
	}
	if got := m.value(t, "hbf_packets_dropped_total", "blocked"); got < 1 {
		t.Errorf("blocked drops %v, want the SYN sent after the block", got)
	}
	// Every TCP packet of the 5+3 connections passed through the program.
	if got := m.value(t, "hbf_packets_total", ""); got < 3*(conns+3) {
		t.Errorf("packets seen %v, want at least %d", got, 3*(conns+3))
	}
	if !strings.HasPrefix(m.raw, "# HELP hbf_new_connections_total") {
		t.Errorf("/metrics does not start with hbf_new_connections_total")
	}
}

type scraped struct {
	raw  string
	fams map[string]*dto.MetricFamily
}

func scrape(t *testing.T, d *daemonProc) scraped {
	t.Helper()
	raw := d.metrics()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("/metrics does not parse as Prometheus text: %v", err)
	}
	return scraped{raw: raw, fams: fams}
}

func (s scraped) value(t *testing.T, name, reason string) float64 {
	t.Helper()
	fam, ok := s.fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range fam.GetMetric() {
		if reason != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
			return (l.GetName() == "reason" || l.GetName() == "state" || l.GetName() == "kind") && l.GetValue() == reason
		}) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s{reason=%q}", name, reason)
	return 0
}

func TestBlocklistFile(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "scanner"}})
	serveHTTP(t, lab.Host, 8080)
	list := filepath.Join(t.TempDir(), "blocklist.txt")
	content := fmt.Sprintf("# known bad\n%s\n198.51.100.0/24\n\n%s/128 # v6 too\n", lab.Peers["scanner"].Addr4, lab.Peers["scanner"].Addr6)
	if err := os.WriteFile(list, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, lab, "--blocklist", list)
	for _, a := range []netip.Addr{lab.Host.Addr4, lab.Host.Addr6} {
		if got := dialOutcome(lab.Peers["scanner"], hostPort(a, 8080), 2*time.Second); got != "filtered" {
			t.Errorf("blocklisted source reached %v: %s", a, got)
		}
		if got := dialOutcome(lab.Peers["client"], hostPort(a, 8080), 5*time.Second); got != "open" {
			t.Errorf("client to %v: %s, want open", a, got)
		}
	}
}

func TestBadBlocklistStopsBeforeAttach(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{})
	list := filepath.Join(t.TempDir(), "blocklist.txt")
	if err := os.WriteFile(list, []byte("192.0.2.7\n198.51.100.0/24\n10.0.0.300\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := tryDaemon(t, lab, "--blocklist", list)
	err := d.wait(20 * time.Second)
	if err == nil {
		t.Fatal("hbf started with a bad blocklist")
	}
	want := list + ` line 3: "10.0.0.300" is not an IP or CIDR`
	if !strings.Contains(d.stderrText(), want) {
		t.Errorf("stderr does not say %q:\n%s", want, d.stderrText())
	}
	noXDP(t, lab.Host)
	if _, err := os.Stat(d.pinPath); !os.IsNotExist(err) {
		t.Errorf("pin path %s exists after a refused start", d.pinPath)
	}
}

func TestAllowlistedScannerIsReportedNotBlocked(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"scanner"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082)
	scanner := lab.Peers["scanner"]
	d := startDaemon(t, lab, "--allow", scanner.Addr4.String())

	states := nmap(t, scanner, lab.Host.Addr4, "8080-8089", "-sS", "-T4")
	if got := learned(states); len(got) != 10 {
		t.Errorf("allowlisted scanner learned %d of 10 ports", len(got))
	}
	d.waitLine(line(`Port scan detected: %s -> %s on ports [0-9,]+ \(allowlisted, not blocked\)`, scanner.Addr4, lab.Host.Addr4))
	if blocked := d.matching(regexp.MustCompile("Blocked")); len(blocked) != 0 {
		t.Errorf("allowlisted scanner blocked: %v", blocked)
	}
	if got := dialOutcome(scanner, hostPort(lab.Host.Addr4, 8080), 5*time.Second); got != "open" {
		t.Errorf("allowlisted scanner's connection: %s, want open", got)
	}
}

func TestJSONLinesAndLogFile(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"scanner"}})
	serveHTTP(t, lab.Host, 8080)
	logFile := filepath.Join(t.TempDir(), "events.log")
	d := startDaemon(t, lab, "--log-format", "json", "--log-file", logFile, "--block-duration", "90")
	scanner := lab.Peers["scanner"]
	for port := 8080; port <= 8083; port++ {
		dialOutcome(scanner, hostPort(lab.Host.Addr4, port), time.Second)
	}
	d.waitLine(regexp.MustCompile(`"event":"block"`))
	if err := d.stop(); err != nil {
		t.Fatalf("exit: %v", err)
	}

	lines := d.output()
	var kinds []string
	for _, l := range lines {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("not JSON: %s", l)
		}
		if _, err := time.Parse(time.RFC3339, ev["time"].(string)); err != nil {
			t.Errorf("time %v is not RFC 3339", ev["time"])
		}
		kinds = append(kinds, ev["event"].(string))
		switch ev["event"] {
		case "connection":
			if ev["src"] != scanner.Addr4.String() || ev["dst_port"] == nil || ev["iface"] != netlab.Iface {
				t.Errorf("connection event %s", l)
			}
		case "portscan":
			if len(ev["ports"].([]any)) != maxPorts+1 {
				t.Errorf("portscan event %s", l)
			}
		case "block":
			if ev["prefix"] != scanner.Addr4.String() || ev["duration"] != "1m30s" || ev["reason"] != "port scan" || ev["expires"] == nil {
				t.Errorf("block event %s", l)
			}
		}
	}
	if want := []string{"connection", "connection", "connection", "portscan", "block"}; !slices.Equal(kinds, want) {
		t.Errorf("events %v, want %v", kinds, want)
	}
	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var fileLines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fileLines = append(fileLines, sc.Text())
	}
	if !slices.Equal(fileLines, lines) {
		t.Errorf("log file holds %d lines, stdout %d; want the same lines", len(fileLines), len(lines))
	}
}

func TestStopAndTimeoutExitCleanly(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{})
	d := startDaemon(t, lab)
	if err := d.stop(); err != nil {
		t.Errorf("SIGTERM: exit %v, want 0", err)
	}
	noXDP(t, lab.Host)
	if _, err := os.Stat(d.pinPath); !os.IsNotExist(err) {
		t.Errorf("pin path %s still exists", d.pinPath)
	}

	start := time.Now()
	d = startDaemon(t, lab, "--timeout", "2")
	if err := d.wait(20 * time.Second); err != nil {
		t.Errorf("--timeout: exit %v, want 0", err)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("exited after %v, before the 2s timeout", took)
	}
	noXDP(t, lab.Host)
}

func TestSecondDaemonIsRefused(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{})
	first := startDaemon(t, lab)

	sameState := tryDaemon(t, lab, "--state-dir", first.stateDir, "--metrics-addr", "127.0.0.1:9718")
	if err := sameState.wait(20 * time.Second); err == nil {
		t.Fatal("a second daemon with the same state dir started")
	}
	if want := "another hbf daemon (pid " + strconv.Itoa(first.cmd.Process.Pid) + ") is running"; !strings.Contains(sameState.stderrText(), want) {
		t.Errorf("stderr does not say %q: %s", want, sameState.stderrText())
	}

	sameIface := tryDaemon(t, lab, "--metrics-addr", "127.0.0.1:9718")
	if err := sameIface.wait(20 * time.Second); err == nil {
		t.Fatal("a second daemon on the same interface started")
	}
	if !strings.Contains(sameIface.stderrText(), "another XDP program is attached") {
		t.Errorf("stderr: %s", sameIface.stderrText())
	}
	if !first.running() {
		t.Error("the first daemon stopped")
	}
}

func TestDemo(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, scanner := range []string{"builtin", "nmap"} {
		t.Run(scanner, func(t *testing.T) {
			if scanner == "nmap" {
				testenv.RequireCommand(t, "nmap")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, hbfBin, "demo", "--scanner", scanner).CombinedOutput()
			if err != nil {
				t.Fatalf("hbf demo: %v\n%s", err, out)
			}
			text := string(out)
			for _, want := range []string{
				"Port scan detected: 192.0.2.3 -> 192.0.2.1 on ports",
				"Blocked 192.0.2.3 for 1h0m0s: port scan",
				"client fetches http://192.0.2.1/: ok",
				"scanner fetches http://192.0.2.1/: timed out (blocked)",
				"lab removed",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("demo output lacks %q:\n%s", want, text)
				}
			}
			m := regexp.MustCompile(`learned the state of (\d+) of 20 ports`).FindStringSubmatch(text)
			if m == nil {
				t.Fatalf("no learned-ports line:\n%s", text)
			}
			if n, _ := strconv.Atoi(m[1]); n > maxPorts {
				t.Errorf("the scanner learned %d ports, want at most %d", n, maxPorts)
			}
		})
	}
}

// A daemon that dies without cleaning up leaves its pinned link attached:
// enforcement goes on, and the next daemon adopts the pins.
func TestCrashKeepsEnforcingAndRestartAdopts(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "scanner"}})
	serveHTTP(t, lab.Host, 8080)
	scanner, client := lab.Peers["scanner"], lab.Peers["client"]
	host := lab.Host.Addr4

	first := startDaemon(t, lab)
	for port := 8080; port <= 8083; port++ {
		dialOutcome(scanner, hostPort(host, port), time.Second)
	}
	first.waitLine(line("Blocked %s for 1h0m0s: port scan", scanner.Addr4))
	first.cmd.Process.Kill()
	first.wait(10 * time.Second)

	if got := dialOutcome(scanner, hostPort(host, 8080), 2*time.Second); got != "filtered" {
		t.Errorf("after the crash the scanner's connection is %s, want dropped", got)
	}
	if got := dialOutcome(client, hostPort(host, 8080), 5*time.Second); got != "open" {
		t.Errorf("after the crash the client's connection is %s, want open", got)
	}

	// A restart that fails half-way (lo has no native XDP) must leave the
	// crashed run's enforcement in place.
	failed := tryDaemonAt(t, lab, first.pinPath, first.stateDir, "--iface", "lo", "--xdp-mode", "native")
	if err := failed.wait(20 * time.Second); err == nil {
		t.Fatal("native XDP on lo was accepted")
	}
	if got := dialOutcome(scanner, hostPort(host, 8080), 2*time.Second); got != "filtered" {
		t.Errorf("after a failed restart the scanner's connection is %s, want dropped:\n%s", got, failed.stderrText())
	}

	second := waitReady(t, tryDaemonAt(t, lab, first.pinPath, first.stateDir))
	if !strings.Contains(second.stderrText(), "adopted the maps pinned by an earlier run") ||
		!strings.Contains(second.stderrText(), "xdp_mode=adopted") {
		t.Errorf("the second daemon did not adopt the pins:\n%s", second.stderrText())
	}
	if got := dialOutcome(scanner, hostPort(host, 8080), 2*time.Second); got != "filtered" {
		t.Errorf("after the restart the scanner's connection is %s, want dropped", got)
	}
	curl(t, client, fmt.Sprintf("http://%s:8080/", host))
	second.waitLine(line(`New connection: %s:\d+ -> %s:8080`, client.Addr4, host))

	if err := second.stop(); err != nil {
		t.Errorf("exit %v", err)
	}
	noXDP(t, lab.Host)
}

func TestStopKeepsEnforcementUntilUninstall(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "scanner"}})
	serveHTTP(t, lab.Host, 8080)
	scanner, client := lab.Peers["scanner"], lab.Peers["client"]
	host := lab.Host.Addr4

	d := startDaemon(t, lab, "--detach-on-exit=false")
	for port := 8080; port <= 8083; port++ {
		dialOutcome(scanner, hostPort(host, port), time.Second)
	}
	d.waitLine(line("Blocked %s for 1h0m0s: port scan", scanner.Addr4))
	if err := d.stop(); err != nil {
		t.Fatalf("SIGTERM: exit %v", err)
	}
	if !strings.Contains(d.stderrText(), "enforcement stays in place") || !strings.Contains(d.stderrText(), "hbf uninstall") {
		t.Errorf("a clean stop does not say how to remove enforcement:\n%s", d.stderrText())
	}
	if got := dialOutcome(scanner, hostPort(host, 8080), 2*time.Second); got != "filtered" {
		t.Errorf("after the stop the scanner's connection is %s, want dropped", got)
	}
	if got := dialOutcome(client, hostPort(host, 8080), 5*time.Second); got != "open" {
		t.Errorf("after the stop the client's connection is %s, want open", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := lab.Host.Run(ctx, hbfBin, "uninstall", "--pin-path", d.pinPath, "--state-dir", d.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "detached from eth0") {
		t.Errorf("uninstall said %q", out)
	}
	noXDP(t, lab.Host)
	if _, err := os.Stat(d.pinPath); !os.IsNotExist(err) {
		t.Errorf("pin path %s exists after uninstall", d.pinPath)
	}
	if got := dialOutcome(scanner, hostPort(host, 8080), 5*time.Second); got != "open" {
		t.Errorf("after uninstall the scanner's connection is %s, want open", got)
	}
}

func (d *daemonProc) get(path string) (int, string) {
	d.t.Helper()
	resp, err := d.ns.HTTPClient().Get("http://127.0.0.1:9717" + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /healthz answers as soon as the daemon binds; /readyz only once it
// protects its interfaces.
func TestHealthEndpoints(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{})
	list := writeList(t, 300000) // a start long enough to watch
	d := tryDaemon(t, lab, "--blocklist", list)
	var sawNotReady, sawHealthy bool
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		code, body := d.get("/readyz")
		if code == http.StatusOK {
			break
		}
		if code == http.StatusServiceUnavailable && strings.Contains(body, "starting") {
			sawNotReady = true
		}
		if code, _ := d.get("/healthz"); code == http.StatusOK {
			sawHealthy = true
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !sawNotReady || !sawHealthy {
		t.Errorf("during the start: /readyz 503 seen %v, /healthz 200 seen %v", sawNotReady, sawHealthy)
	}
	if code, body := d.get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the start: %d %s", code, body)
	}
	if code, body := d.get("/metrics"); code != http.StatusOK || !strings.Contains(body, "hbf_new_connections_total") {
		t.Errorf("/metrics: %d", code)
	}
}

func TestIgnoredPortsDoNotCount(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client"}})
	serveHTTP(t, lab.Host, 8080, 8081, 9000, 9001, 9002, 9003)
	client, host := lab.Peers["client"], lab.Host.Addr4
	d := startDaemon(t, lab, "--ignore-ports", "8080,8081")
	// A browser-like client: two service ports, three others. Not a scan.
	for _, port := range []int{8080, 8081, 9000, 9001, 9002} {
		if got := dialOutcome(client, hostPort(host, port), 5*time.Second); got != "open" {
			t.Fatalf("port %d: %s", port, got)
		}
	}
	if got := dialOutcome(client, hostPort(host, 9003), time.Second); got != "filtered" {
		t.Errorf("the 4th counted port: %s, want dropped", got)
	}
	d.waitLine(line(`Port scan detected: %s -> %s on ports 9000,9001,9002,9003`, client.Addr4, host))
}
