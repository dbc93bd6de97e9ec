package e2e

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/crowdsectest"
	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// crowdsecArgs are a daemon's flags to read lapi's decisions every
// second, with a bouncer key of its own.
func crowdsecArgs(t testing.TB, lapi *crowdsectest.LAPI, name string) []string {
	t.Helper()
	return crowdsecArgsVia(t, lapi, name, lapi.URL())
}

// crowdsecArgsVia are crowdsecArgs, reaching lapi at url.
func crowdsecArgsVia(t testing.TB, lapi *crowdsectest.LAPI, name, url string) []string {
	t.Helper()
	key := filepath.Join(t.TempDir(), "bouncer.key")
	if err := os.WriteFile(key, []byte(lapi.BouncerKey(name)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--log-format", "json", "--crowdsec-lapi", url, "--crowdsec-key-file", key, "--crowdsec-interval", "1s"}
}

// CrowdSec's decisions, added and deleted with cscli, are enforced and
// released within an interval, IPv4 and IPv6, with their origin; one for
// a protected address or wider than the CrowdSec minimum is refused and
// counted; hbf unblock says what ends one.
func TestCrowdSecDecisionsAreEnforced(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"lapi", "attacker", "client"}})
	serveHTTP(t, lab.Host, 8080)
	lapi := crowdsectest.Start(t, crowdsectest.Options{NS: lab.Peers["lapi"], Addr: lab.Peers["lapi"].Addr4})
	d := startDaemon(t, lab, crowdsecArgs(t, lapi, "hbf")...)
	attacker, client := lab.Peers["attacker"], lab.Peers["client"]
	eventually(t, "hbf reads LAPI", func() bool { cs := d.status().CrowdSec; return cs != nil && cs.Connected })

	added := time.Now()
	lapi.Cscli("decisions", "add", "-i", attacker.Addr4.String(), "-d", "1h", "-R", "e2e")
	lapi.Cscli("decisions", "add", "-r", host(attacker.Addr6), "-d", "1h", "-R", "e2e")
	eventually(t, "the decisions enforced", func() bool {
		blocks := d.listJSON()
		return findBlock(blocks, host(attacker.Addr4), "crowdsec:cscli") != nil &&
			findBlock(blocks, host(attacker.Addr6), "crowdsec:cscli") != nil
	})
	t.Logf("cscli decisions add to the block in hbf: %v", time.Since(added).Round(time.Millisecond))
	for _, a := range []netip.Addr{lab.Host.Addr4, lab.Host.Addr6} {
		if got := dialOutcome(attacker, hostPort(a, 8080), time.Second); got != "filtered" {
			t.Errorf("the attacker under a decision reaches %v: %s", a, got)
		}
	}
	if out, code := d.cli("unblock", attacker.Addr4.String()); code == 0 || !strings.Contains(out, "cscli decisions delete --ip "+attacker.Addr4.String()) {
		t.Errorf("hbf unblock of a decision's block: exit %d, %s", code, out)
	}

	// Refused: the host's own address, a gateway of the lab, the whole of IPv4.
	lapi.Cscli("decisions", "add", "-i", lab.Host.Addr4.String(), "-d", "1h", "-R", "e2e")
	lapi.Cscli("decisions", "add", "-r", "0.0.0.0/0", "-d", "1h", "-R", "e2e")
	eventually(t, "the refusals counted", func() bool { return d.status().CrowdSec.Refused["policy"] >= 2 })
	if got := dialOutcome(client, hostPort(lab.Host.Addr4, 8080), time.Second); got != "open" {
		t.Errorf("the client after decisions on the host and 0.0.0.0/0: %s, want open", got)
	}

	lapi.Cscli("decisions", "delete", "-i", attacker.Addr4.String())
	eventually(t, "the deleted decision released", func() bool {
		return findBlock(d.listJSON(), host(attacker.Addr4), "crowdsec:cscli") == nil
	})
	if got := dialOutcome(attacker, hostPort(lab.Host.Addr4, 8080), time.Second); got != "open" {
		t.Errorf("the attacker once its decision is deleted: %s, want open", got)
	}
}

// Decisions are kept across a restart of hbf and while LAPI is down: what
// was in force stays in force; a decision deleted while hbf was stopped is
// gone after its start; LAPI back, hbf catches up.
func TestCrowdSecDecisionsOutliveOutages(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"lapi", "a", "b", "c"}})
	serveHTTP(t, lab.Host, 8080)
	lapi := crowdsectest.Start(t, crowdsectest.Options{NS: lab.Peers["lapi"], Addr: lab.Peers["lapi"].Addr4})
	args := crowdsecArgs(t, lapi, "hbf")
	d := startDaemon(t, lab, append([]string{"--detach-on-exit=false"}, args...)...)
	a, b, c := lab.Peers["a"], lab.Peers["b"], lab.Peers["c"]
	lapi.Cscli("decisions", "add", "-i", a.Addr4.String(), "-d", "1h", "-R", "e2e")
	lapi.Cscli("decisions", "add", "-i", b.Addr4.String(), "-d", "1h", "-R", "e2e")
	eventually(t, "both decisions enforced", func() bool {
		blocks := d.listJSON()
		return findBlock(blocks, host(a.Addr4), "crowdsec:cscli") != nil && findBlock(blocks, host(b.Addr4), "crowdsec:cscli") != nil
	})

	// hbf stopped: b's decision deleted meanwhile is gone after its start,
	// a's holds from the first moment.
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	lapi.Cscli("decisions", "delete", "-i", b.Addr4.String())
	d = d.restart(lab, args...)
	if got := dialOutcome(a, hostPort(lab.Host.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("a after the restart: %s, want filtered", got)
	}
	eventually(t, "b's deleted decision released after the start", func() bool {
		return findBlock(d.listJSON(), host(b.Addr4), "crowdsec:cscli") == nil
	})

	// LAPI down: enforcement stays, status says so.
	lapi.Kill()
	eventually(t, "status says LAPI is out of reach", func() bool { cs := d.status().CrowdSec; return cs != nil && !cs.Connected })
	if got := dialOutcome(a, hostPort(lab.Host.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("a with LAPI down: %s, want filtered", got)
	}
	// Back: a decision made since is enforced.
	lapi.Start()
	lapi.Cscli("decisions", "add", "-i", c.Addr4.String(), "-d", "1h", "-R", "e2e")
	eventuallyWithin(t, time.Minute+10*time.Second, "hbf catches up with LAPI", func() bool {
		return findBlock(d.listJSON(), host(c.Addr4), "crowdsec:cscli") != nil
	})
}

// startFirewallBouncer runs Debian's crowdsec-firewall-bouncer (nftables)
// in ns, reading lapi every second with a key of its own.
func startFirewallBouncer(t testing.TB, ns *netlab.NS, lapi *crowdsectest.LAPI) *exec.Cmd {
	t.Helper()
	testenv.RequireCommand(t, "crowdsec-firewall-bouncer")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bouncer.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`mode: nftables
pid_dir: %s/
update_frequency: 1s
daemonize: false
log_mode: stdout
log_level: info
api_url: %s/
api_key: %s
disable_ipv6: false
deny_action: DROP
deny_log: false
supported_decisions_types:
  - ban
blacklists_ipv4: crowdsec-blacklists
blacklists_ipv6: crowdsec6-blacklists
nftables:
  ipv4:
    enabled: true
    set-only: false
    table: crowdsec
    chain: crowdsec-chain
  ipv6:
    enabled: true
    set-only: false
    table: crowdsec6
    chain: crowdsec6-chain
prometheus:
  enabled: false
`, dir, lapi.URL(), lapi.BouncerKey("firewall-"+ns.Role))), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, "crowdsec-firewall-bouncer", "-c", cfg)
	var out testenv.Log
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("crowdsec-firewall-bouncer:\n%s", out.String())
		}
	})
	return cmd
}

// hbf's blocks go to LAPI as alerts carrying their bans: a source over a
// connection limit (by default) and a scanner (with scans pushed) show in
// cscli alerts list and decisions list, and another bouncer of that LAPI —
// the firewall bouncer on a second host — drops them too. hbf does not
// apply its own alerts' decisions again. LAPI down while hbf detects: the
// alert arrives when it returns.
func TestCrowdSecGetsHBFsDetections(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "nmap")
	lab := newLab(t, netlab.Options{Peers: []string{"lapi", "web", "attacker", "scanner", "late"}})
	lapi := crowdsectest.Start(t, crowdsectest.Options{NS: lab.Peers["lapi"], Addr: lab.Peers["lapi"].Addr4})
	web, attacker, scanner := lab.Peers["web"], lab.Peers["attacker"], lab.Peers["scanner"]
	serveHTTP(t, web, 8080)
	serveEcho(t, lab.Host, 7000)
	startFirewallBouncer(t, web, lapi)
	password := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(password, []byte("machine-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lapi.Machine("hbf-host", "machine-secret")
	d := startDaemon(t, lab, append(crowdsecArgs(t, lapi, "hbf-host"), "--limit", "7000/tcp=3/60s",
		"--crowdsec-machine-id", "hbf-host", "--crowdsec-password-file", password, "--crowdsec-push", "limits,scans")...)

	// Over the connection limit.
	for range 4 {
		echo(attacker, hostPort(lab.Host.Addr4, 7000))
	}
	blocked := d.blockEvent(attacker.Addr4.String(), "connection limit 7000/tcp")
	eventuallyWithin(t, 30*time.Second, "the second host drops the source over the limit", func() bool {
		return dialOutcome(attacker, hostPort(web.Addr4, 8080), 500*time.Millisecond) == "filtered"
	})
	t.Logf("hbf's block to the firewall bouncer's drop on the second host: %v", time.Since(blocked).Round(time.Millisecond))
	alerts := lapi.Cscli("alerts", "list", "-o", "json")
	if !strings.Contains(alerts, "hbf/connection-limit") || !strings.Contains(alerts, attacker.Addr4.String()) {
		t.Errorf("cscli alerts list lacks hbf's connection-limit alert:\n%s", alerts)
	}
	if decisions := lapi.Cscli("decisions", "list", "-o", "json"); !strings.Contains(decisions, attacker.Addr4.String()) {
		t.Errorf("cscli decisions list lacks the ban:\n%s", decisions)
	}

	// A scan, pushed as asked.
	nmap(t, scanner, lab.Host.Addr4, "8080-8084", "-sS", "-T5", "--max-retries", "0")
	eventuallyWithin(t, 30*time.Second, "the second host drops the scanner", func() bool {
		return dialOutcome(scanner, hostPort(web.Addr4, 8080), 500*time.Millisecond) == "filtered"
	})
	if alerts := lapi.Cscli("alerts", "list", "-o", "json"); !strings.Contains(alerts, "hbf/port-scan") {
		t.Errorf("cscli alerts list lacks hbf's port-scan alert:\n%s", alerts)
	}
	// Its own alerts' decisions are not applied again as CrowdSec's.
	for _, b := range d.listJSON() {
		if strings.HasPrefix(b.Origin, "crowdsec:") {
			t.Errorf("hbf applied its own alert's decision again: %+v", b)
		}
	}

	// LAPI down while hbf detects: the alert waits, and arrives.
	lapi.Kill()
	late := lab.Peers["late"]
	for range 4 {
		echo(late, hostPort(lab.Host.Addr4, 7000))
	}
	d.blockEvent(late.Addr4.String(), "connection limit 7000/tcp")
	lapi.Start()
	eventuallyWithin(t, 90*time.Second, "the alert made while LAPI was down reaches it", func() bool {
		out, err := lapi.TryCscli("alerts", "list", "-o", "json")
		return err == nil && strings.Contains(out, late.Addr4.String())
	})
}

// lossyProxy stands between hbf and LAPI in LAPI's namespace: it passes
// requests on, and when told, loses the next answer to a stream read that
// carries decisions — after LAPI wrote it, so LAPI counts it as read.
type lossyProxy struct {
	lapi  string
	ns    *netlab.NS
	mu    sync.Mutex
	lose  bool
	lost  int
	reads int
}

func (p *lossyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, p.lapi+r.URL.RequestURI(), r.Body)
	req.Header = r.Header.Clone()
	resp, err := p.ns.HTTPClient().Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p.mu.Lock()
	p.reads++
	lose := p.lose && strings.Contains(string(body), `"value"`)
	if lose {
		p.lose, p.lost = false, p.lost+1
	}
	p.mu.Unlock()
	if lose {
		panic(http.ErrAbortHandler) // the connection drops: no answer
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
}

// A stream answer lost between LAPI and hbf loses its changes for good
// but for the next snapshot, which makes them good. A /8 range, and a
// decision past the cap of its origin, are refused and counted.
func TestCrowdSecLostAnswerAndRefusals(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"lapi", "a", "b"}})
	ns := lab.Peers["lapi"]
	lapi := crowdsectest.Start(t, crowdsectest.Options{NS: ns, Addr: ns.Addr4})
	ln, err := ns.Listen("tcp", netip.AddrPortFrom(ns.Addr4, 8081).String())
	if err != nil {
		t.Fatal(err)
	}
	proxy := &lossyProxy{lapi: lapi.URL(), ns: ns}
	srv := &http.Server{Handler: proxy, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	args := crowdsecArgsVia(t, lapi, "hbf", "http://"+netip.AddrPortFrom(ns.Addr4, 8081).String())
	d := startDaemon(t, lab, append(args, "--crowdsec-resync", "6s", "--crowdsec-max-per-origin", "2")...)
	eventually(t, "hbf reads LAPI", func() bool { cs := d.status().CrowdSec; return cs != nil && cs.Connected })

	a, b := lab.Peers["a"], lab.Peers["b"]
	proxy.mu.Lock()
	proxy.lose = true
	proxy.mu.Unlock()
	lapi.Cscli("decisions", "add", "-i", a.Addr4.String(), "-d", "1h", "-R", "e2e")
	eventually(t, "the answer carrying the decision lost", func() bool {
		proxy.mu.Lock()
		defer proxy.mu.Unlock()
		return proxy.lost == 1
	})
	lost := time.Now()
	eventuallyWithin(t, 20*time.Second, "the next snapshot makes the lost decision good", func() bool {
		return findBlock(d.listJSON(), host(a.Addr4), "crowdsec:cscli") != nil
	})
	t.Logf("a decision whose answer was lost, enforced %v later", time.Since(lost).Round(100*time.Millisecond))

	// Refused: wider than /16, and past the cap of cscli's 2.
	lapi.Cscli("decisions", "add", "-r", "10.0.0.0/8", "-d", "1h", "-R", "e2e")
	lapi.Cscli("decisions", "add", "-i", b.Addr4.String(), "-d", "1h", "-R", "e2e")
	lapi.Cscli("decisions", "add", "-i", "198.51.100.77", "-d", "1h", "-R", "e2e")
	eventually(t, "the refusals counted", func() bool {
		cs := d.status().CrowdSec
		return cs.Refused["policy"] >= 1 && cs.Refused["cap"] >= 1
	})
	if blocks := d.listJSON(); findBlock(blocks, "10.0.0.0/8", "crowdsec:cscli") != nil {
		t.Error("a /8 decision was enforced")
	}
	if n := d.status().CrowdSec.Decisions["cscli"]; n != 2 {
		t.Errorf("%d cscli decisions in force, want the cap's 2", n)
	}
}

// BenchmarkCrowdSecScale loads 10,000 and 100,000 ban decisions into a
// LAPI with cscli decisions import, then starts hbf and Debian's
// crowdsec-firewall-bouncer (nftables, on another host) beside it, and
// times each from its start to every address in its kernel set, with
// the CPU each spent; hbf also reports its first read, from the request
// to its blocks in the kernel. (Importing while the bouncers poll makes
// LAPI's SQLite answer "database is locked".) The bouncer's run is cut at
// ten minutes; it then reports the rate it reached.
func BenchmarkCrowdSecScale(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("decisions=%d", n), func(b *testing.B) { benchCrowdSecScale(b, n) })
	}
}

func benchCrowdSecScale(b *testing.B, n int) {
	testenv.RequireCommand(b, "nft")
	lab := newLab(b, netlab.Options{Peers: []string{"lapi", "fw"}})
	ns, fwNS := lab.Peers["lapi"], lab.Peers["fw"]
	lapi := crowdsectest.Start(b, crowdsectest.Options{NS: ns, Addr: ns.Addr4})
	csv := filepath.Join(b.TempDir(), "decisions.csv")
	var list strings.Builder
	list.WriteString("duration,scope,value\n")
	for i := range n {
		fmt.Fprintf(&list, "4h,ip,10.%d.%d.%d\n", i>>16&0xff, i>>8&0xff, i&0xff)
	}
	if err := os.WriteFile(csv, []byte(list.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	lapi.Cscli("decisions", "import", "-i", csv)
	b.ReportMetric(time.Since(start).Seconds(), "s-import")
	args := append(crowdsecArgs(b, lapi, "hbf"), "--crowdsec-max-per-origin", "0")

	setSize := func() int {
		out, err := fwNS.Run(context.Background(), "nft", "list", "set", "ip", "crowdsec", "crowdsec-blacklists")
		if err != nil {
			return 0
		}
		return strings.Count(out, "10.")
	}
	hbfStart := time.Now()
	d := startDaemon(b, lab, args...)
	var hbfAt time.Time
	var took, applied string
	for time.Since(hbfStart) < 2*time.Minute {
		if cs := d.status().CrowdSec; cs != nil {
			held := 0
			for _, k := range cs.Decisions {
				held += k
			}
			if held >= n {
				hbfAt, took, applied = time.Now(), cs.LastPullTook, cs.LastApplyTook
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if hbfAt.IsZero() {
		b.Fatalf("hbf holds %+v of %d decisions after 2 minutes", d.status().CrowdSec, n)
	}
	for _, line := range strings.Split(d.stderrText(), "\n") {
		if strings.Contains(line, "CrowdSec's decisions applied") {
			b.Log(line)
		}
	}
	pullTook, _ := time.ParseDuration(took)
	applyTook, _ := time.ParseDuration(applied)
	b.ReportMetric(pullTook.Seconds(), "s-hbf-pull-to-enforced")
	b.ReportMetric(applyTook.Seconds(), "s-hbf-answer-to-enforced")
	b.ReportMetric(hbfAt.Sub(hbfStart).Seconds(), "s-hbf-from-start")
	b.ReportMetric(float64(pidCPU(b, d.cmd.Process.Pid).Milliseconds()), "ms-hbf-cpu")

	fwStart := time.Now()
	fw := startFirewallBouncer(b, fwNS, lapi)
	var fwAt time.Time
	reached := 0
	for time.Since(fwStart) < 10*time.Minute {
		if reached = setSize(); reached >= n {
			fwAt = time.Now()
			break
		}
		time.Sleep(time.Second)
	}
	b.ReportMetric(float64(pidCPU(b, fw.Process.Pid).Milliseconds()), "ms-bouncer-cpu")
	if fwAt.IsZero() {
		b.ReportMetric(float64(reached)/time.Since(fwStart).Seconds(), "bouncer-decisions/s")
		b.Logf("the firewall bouncer held %d of %d after ten minutes", reached, n)
		return
	}
	b.ReportMetric(fwAt.Sub(fwStart).Seconds(), "s-bouncer-from-start")
	b.ReportMetric(fwAt.Sub(fwStart).Seconds()/hbfAt.Sub(hbfStart).Seconds(), "x-bouncer-vs-hbf")
}
