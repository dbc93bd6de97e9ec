package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/etcdtest"
	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// fleetUser is the etcd user of node name: it reads the fleet and writes
// its own subtree and membership key only (docs/fleet.md's roles).
func fleetUser(name string) etcdtest.User {
	return etcdtest.User{Name: name, Password: name + "-secret", Read: []string{"/hbf/"},
		Write: []string{"/hbf/blocks/" + name + "/", "/hbf/members/" + name}}
}

// adminUser is the fleet's admin: it writes the fleet-wide decisions.
var adminUser = etcdtest.User{Name: "hbf-admin", Password: "admin-secret", Read: []string{"/hbf/"}, Write: []string{"/hbf/admin/"}}

// fleetArgs are the flags of node name in the fleet on etcd, as its user.
func fleetArgs(t *testing.T, etcd *etcdtest.Server, name string, admin bool) []string {
	t.Helper()
	dir := t.TempDir()
	secret := func(file, password string) string {
		path := filepath.Join(dir, file)
		if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	args := []string{"--log-format", "json", "--fleet-etcd", etcd.Endpoint(), "--node-name", name,
		"--fleet-user", name, "--fleet-password-file", secret("password", name+"-secret")}
	if admin {
		args = append(args, "--fleet-admin-user", adminUser.Name, "--fleet-admin-password-file", secret("admin", adminUser.Password))
	}
	return args
}

func (d *daemonProc) fleetStatus() api.FleetStatus {
	d.t.Helper()
	var st api.FleetStatus
	if err := json.Unmarshal([]byte(d.mustCLI("fleet", "status", "-o", "json")), &st); err != nil {
		d.t.Fatal(err)
	}
	return st
}

// blockEvent waits for the JSON event of a block of prefix whose reason
// holds reason, and returns its time.
func (d *daemonProc) blockEvent(prefix, reason string) time.Time {
	d.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range d.output() {
			var ev struct {
				Time   time.Time `json:"time"`
				Event  string    `json:"event"`
				Prefix string    `json:"prefix"`
				Reason string    `json:"reason"`
			}
			if json.Unmarshal([]byte(l), &ev) == nil && ev.Event == "block" && ev.Prefix == prefix && strings.Contains(ev.Reason, reason) {
				return ev.Time
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.t.Fatalf("no block event of %s for %q:\n%s", prefix, reason, strings.Join(d.output(), "\n"))
	return time.Time{}
}

// Two protected hosts and one etcd: a scan of host A gets the scanner
// blocked on host B, which it never touched; unblock --fleet releases it
// everywhere; a fleet block of B's own address is refused on B.
func TestFleetSharesScanBlocks(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"b", "etcd", "scanner", "client"}})
	hostB, scanner, client := lab.Peers["b"], lab.Peers["scanner"], lab.Peers["client"]
	etcd := etcdtest.Start(t, etcdtest.Options{NS: lab.Peers["etcd"], Addr: lab.Peers["etcd"].Addr4})
	etcd.EnableAuth(fleetUser("a"), fleetUser("b"), adminUser)
	serveHTTP(t, hostB, 8080)
	a := startDaemon(t, lab, fleetArgs(t, etcd, "a", true)...)
	b := startDaemonOn(t, hostB, fleetArgs(t, etcd, "b", false)...)
	eventually(t, "both nodes in the fleet", func() bool {
		sa, sb := a.fleetStatus(), b.fleetStatus()
		return sa.Connected && sb.Connected && len(sa.Members) == 2 && len(sb.Members) == 2
	})

	spoofScan(t, scanner, scanner.Addr4, lab.Host.Addr4)
	src := scanner.Addr4.String()
	detected := a.blockEvent(src, "port scan")
	applied := b.blockEvent(src, "(fleet: a)")
	t.Logf("A's detection to B's enforcement: %v", applied.Sub(detected).Round(time.Millisecond))
	if d := applied.Sub(detected); d > 2*time.Second {
		t.Errorf("the block took %v to reach B", d)
	}
	if got := dialOutcome(scanner, hostPort(hostB.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("the scanner at B, which it never scanned: %s, want filtered", got)
	}
	if got := dialOutcome(client, hostPort(hostB.Addr4, 8080), 2*time.Second); got != "open" {
		t.Errorf("the client at B: %s, want open", got)
	}
	if st := b.fleetStatus(); st.Entries["a"] != 1 {
		t.Errorf("B's entries from a: %+v", st.Entries)
	}
	if st := b.status(); st.Counters["fleet_connected"] != 1 || st.Counters["fleet_members"] != 2 || st.Counters["fleet_entries"] != 1 {
		t.Errorf("hbf status on B: %+v", st.Counters)
	}
	if out := b.mustCLI("why", src); !strings.Contains(out, "(fleet:a)") {
		t.Errorf("hbf why on B:\n%s", out)
	}

	// A fleet block of B's own address: A refuses to make it (B is a
	// member), and one published all the same (written straight into
	// etcd, as a node that does not check would) B refuses, and keeps
	// serving.
	a.refused(1, "is an address of b, a member of the fleet: never blocked", "block", "--fleet", hostB.Addr4.String())
	key := "/hbf/blocks/x/" + hostB.Addr4.String() + "%2F32"
	etcd.MustCtl("put", key, fmt.Sprintf(`{"version":1,"prefix":"%s/32","origin":"manual","reason":"a mistake","created":%q}`,
		hostB.Addr4, time.Now().UTC().Format(time.RFC3339Nano)))
	eventually(t, "B refused the block of its own address", func() bool {
		return scrape(t, b).value(t, "hbf_fleet_rejected_total", "protected") >= 1
	})
	if got := dialOutcome(client, hostPort(hostB.Addr4, 8080), 2*time.Second); got != "open" {
		t.Errorf("the client at B after a fleet block of B: %s, want open", got)
	}
	etcd.MustCtl("del", key)

	// Fleet-wide: released everywhere; B holds no admin credential.
	b.refused(1, "this node holds no fleet admin credential", "unblock", "--fleet", src)
	a.mustCLI("unblock", "--fleet", src)
	eventually(t, "released on B", func() bool { return b.fleetStatus().Entries["a"] == 0 })
	eventually(t, "released on A", func() bool { return !a.blocked(src + "/32") })
	if got := dialOutcome(scanner, hostPort(hostB.Addr4, 8080), 2*time.Second); got != "open" {
		t.Errorf("the scanner at B after unblock --fleet: %s, want open", got)
	}

	// etcd's roles: node a writes under its own subtree only.
	for _, args := range [][]string{{"put", "/hbf/blocks/b/203.0.113.9%2F32", "{}"}, {"put", "/hbf/admin/unblocks/x", "{}"},
		{"del", "/hbf/members/b"}} {
		if out, err := etcd.CtlAs("a", "a-secret", args...); err == nil || !strings.Contains(out, "permission denied") {
			t.Errorf("etcdctl %v as a: %v %q, want permission denied", args, err, out)
		}
	}
}

// cutOff makes etcd unreachable from ns (true), or reachable again.
func cutOff(t *testing.T, ns *netlab.NS, etcd netip.Addr, cut bool) {
	t.Helper()
	verb := "add"
	if !cut {
		verb = "del"
	}
	ip(t, ns, "route", verb, "blackhole", etcd.String()+"/32")
}

// --fleet-min-reporters 2: a scan seen by one node alone is not applied
// on C; once a second node sees the source scan, it is.
func TestFleetWaitsForEnoughReporters(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"b", "c", "etcd", "scanner"}})
	scanner := lab.Peers["scanner"]
	etcd := etcdtest.Start(t, etcdtest.Options{NS: lab.Peers["etcd"], Addr: lab.Peers["etcd"].Addr4})
	etcd.EnableAuth(fleetUser("a"), fleetUser("b"), fleetUser("c"))
	two := []string{"--fleet-min-reporters", "2"}
	a := startDaemon(t, lab, fleetArgs(t, etcd, "a", false)...)
	b := startDaemonOn(t, lab.Peers["b"], append(fleetArgs(t, etcd, "b", false), two...)...)
	c := startDaemonOn(t, lab.Peers["c"], append(fleetArgs(t, etcd, "c", false), two...)...)
	eventually(t, "three members", func() bool { return len(c.fleetStatus().Members) == 3 })

	src := scanner.Addr4.String()
	spoofScan(t, scanner, scanner.Addr4, lab.Host.Addr4)
	a.blockEvent(src, "port scan")
	eventually(t, "one reporter: pending on C", func() bool { return c.fleetStatus().Pending == 1 })
	if c.blocked(src + "/32") {
		t.Error("C applied a scan one node reported")
	}
	// B waits too, so it sees the scan itself: the second reporter.
	spoofScan(t, scanner, scanner.Addr4, lab.Peers["b"].Addr4)
	b.blockEvent(src, "port scan")
	c.blockEvent(src, "(fleet: ")
	if st := c.fleetStatus(); st.Pending != 0 || st.Entries["a"]+st.Entries["b"] != 2 {
		t.Errorf("C after two reporters: %+v", st)
	}
}

// etcd killed and restarted mid-run, a node cut off across a forced
// compaction, and an unblock of the fleet issued while it was away: every
// host converges on the same blocks, detections made during the outage
// reach the others, and the unblocked prefix stays unblocked.
func TestFleetConvergesAfterOutages(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"b", "etcd", "s1", "s2", "s3"}})
	hostB, etcdNS := lab.Peers["b"], lab.Peers["etcd"]
	etcd := etcdtest.Start(t, etcdtest.Options{NS: etcdNS, Addr: etcdNS.Addr4})
	etcd.EnableAuth(fleetUser("a"), fleetUser("b"), adminUser)
	a := startDaemon(t, lab, fleetArgs(t, etcd, "a", true)...)
	b := startDaemonOn(t, hostB, fleetArgs(t, etcd, "b", false)...)
	eventually(t, "both nodes in the fleet", func() bool { return len(b.fleetStatus().Members) == 2 })
	s1, s2, s3 := lab.Peers["s1"], lab.Peers["s2"], lab.Peers["s3"]

	// etcd dies; A detects a scan meanwhile; etcd comes back.
	etcd.Kill()
	eventuallyWithin(t, 30*time.Second, "A sees the outage", func() bool { return !a.fleetStatus().Connected })
	spoofScan(t, s1, s1.Addr4, lab.Host.Addr4)
	a.blockEvent(s1.Addr4.String(), "port scan")
	etcd.Restart()
	b.blockEvent(s1.Addr4.String(), "(fleet: a)")

	// B cut off: A detects another scan, the fleet unblocks s1, etcd
	// compacts its history past where B was.
	cutOff(t, hostB, etcdNS.Addr4, true)
	eventuallyWithin(t, 30*time.Second, "B sees it is cut off", func() bool { return !b.fleetStatus().Connected })
	spoofScan(t, s2, s2.Addr4, lab.Host.Addr4)
	a.blockEvent(s2.Addr4.String(), "port scan")
	a.mustCLI("unblock", "--fleet", s1.Addr4.String())
	eventually(t, "unblocked on A", func() bool { return !a.blocked(s1.Addr4.String() + "/32") })
	etcd.Compact()
	// And B, cut off, detects a scan of its own.
	spoofScan(t, s3, s3.Addr4, hostB.Addr4)
	b.blockEvent(s3.Addr4.String(), "port scan")

	cutOff(t, hostB, etcdNS.Addr4, false)
	eventuallyWithin(t, 60*time.Second, "both converge", func() bool {
		return b.blocked(s2.Addr4.String()+"/32") && !b.blocked(s1.Addr4.String()+"/32") && a.blocked(s3.Addr4.String()+"/32")
	})
	if a.blocked(s1.Addr4.String() + "/32") {
		t.Error("the unblocked prefix came back on A")
	}
}

// Bad values written straight into etcd are skipped and counted, never
// applied, never fatal.
func TestFleetSkipsBadEntries(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"etcd"}})
	etcd := etcdtest.Start(t, etcdtest.Options{NS: lab.Peers["etcd"], Addr: lab.Peers["etcd"].Addr4})
	a := startDaemon(t, lab, "--log-format", "json", "--fleet-etcd", etcd.Endpoint(), "--node-name", "a")
	eventually(t, "a in the fleet", func() bool { return a.fleetStatus().Connected })
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for key, value := range map[string]string{
		"/hbf/blocks/x/198.51.100.1%2F32": `not json`,
		"/hbf/blocks/x/198.51.100.2%2F32": `{"version":7,"prefix":"198.51.100.2/32"}`,
		"/hbf/blocks/x/198.51.100.3%2F32": `{"version":1,"prefix":"198.51.100.3/33","created":"` + past + `"}`,
		"/hbf/blocks/x/198.51.100.4%2F32": `{"version":1,"prefix":"198.51.100.44/32","created":"` + past + `"}`,
		"/hbf/blocks/x/0.0.0.0%2F0":       `{"version":1,"prefix":"0.0.0.0/0","origin":"manual","created":"` + past + `","expires_at":"` + future + `"}`,
		"/hbf/blocks/x/198.51.100.6%2F32": `{"version":1,"prefix":"198.51.100.6/32","origin":"manual","created":"` + past + `","expires_at":"` + past + `"}`,
		"/hbf/elsewhere/198.51.100.7":     `{}`,
	} {
		etcd.MustCtl("put", key, value)
	}
	var missing []string
	eventually(t, "every bad entry counted", func() bool {
		s := scrape(t, a)
		missing = nil
		for _, reason := range []string{"not_json", "version", "bad_prefix", "key_mismatch", "expired", "outside", "too_wide"} {
			if s.value(t, "hbf_fleet_rejected_total", reason) < 1 {
				missing = append(missing, reason)
			}
		}
		if len(missing) > 0 {
			t.Logf("not counted yet: %v", missing)
		}
		return len(missing) == 0
	})
	if n := a.fleetStatus().Entries["x"]; n != 0 || !a.running() {
		t.Errorf("%d bad entries applied; daemon running %v", n, a.running())
	}
}

// TLS with client certificates made by the test: etcd takes a node's
// certificate for its user; a node whose certificate etcd refuses
// protects its host all the same, local-only, and says why.
func TestFleetOverTLS(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"b", "etcd"}})
	etcdAddr := lab.Peers["etcd"].Addr4
	ca := testenv.NewCA(t, "fleet")
	etcd := etcdtest.Start(t, etcdtest.Options{NS: lab.Peers["etcd"], Addr: etcdAddr, TLS: etcdtest.ServerTLS(ca, etcdAddr)})
	etcd.EnableAuth(fleetUser("a"), fleetUser("b"))
	tlsArgs := func(ca *testenv.CA, name string) []string {
		cert, key := ca.Issue(name)
		return []string{"--fleet-etcd", etcd.Endpoint(), "--node-name", name, "--fleet-ca", ca.File,
			"--fleet-cert", cert, "--fleet-key", key}
	}
	a := startDaemon(t, lab, tlsArgs(ca, "a")...)
	eventually(t, "a in the fleet over TLS", func() bool { return a.fleetStatus().Connected })

	stranger := testenv.NewCA(t, "stranger")
	args := tlsArgs(stranger, "b")
	args[5] = ca.File // it trusts etcd, but etcd does not trust its certificate
	b := startDaemonOn(t, lab.Peers["b"], args...)
	eventuallyWithin(t, 30*time.Second, "b says why it is local-only", func() bool { return b.fleetStatus().Why != "" })
	if st := b.fleetStatus(); st.Connected || !strings.Contains(st.Why, "bad certificate") {
		t.Errorf("a node with a certificate etcd refuses: %+v, want local-only, saying etcd refused its certificate", st)
	}
	if st := b.status(); len(st.Interfaces) != 1 {
		t.Errorf("b does not protect its host: %+v", st.Interfaces)
	}
	if members := a.fleetStatus().Members; len(members) != 1 {
		t.Errorf("members %+v: want a alone", members)
	}
}

// A node restarted while etcd is away keeps enforcing what it had applied
// from the fleet (the kernel and its store hold it), and catches up once
// etcd is back, applying nothing twice.
func TestFleetRestartKeepsWhatItApplied(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"b", "etcd", "scanner"}})
	hostB, scanner := lab.Peers["b"], lab.Peers["scanner"]
	etcd := etcdtest.Start(t, etcdtest.Options{NS: lab.Peers["etcd"], Addr: lab.Peers["etcd"].Addr4})
	serveHTTP(t, hostB, 8080)
	a := startDaemon(t, lab, "--log-format", "json", "--fleet-etcd", etcd.Endpoint(), "--node-name", "a")
	argsB := []string{"--log-format", "json", "--fleet-etcd", etcd.Endpoint(), "--node-name", "b"}
	b := startDaemonOn(t, hostB, argsB...)
	src := scanner.Addr4.String()
	spoofScan(t, scanner, scanner.Addr4, lab.Host.Addr4)
	a.blockEvent(src, "port scan")
	b.blockEvent(src, "(fleet: a)")

	etcd.Kill()
	b.kill9()
	again := waitReady(t, tryDaemonIn(t, hostB, hbfBin, b.pinPath, b.stateDir, argsB...))
	if !again.blocked(src + "/32") {
		t.Errorf("restarted without etcd, B lost the fleet's block:\n%s", again.mustCLI("list"))
	}
	if got := dialOutcome(scanner, hostPort(hostB.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("the scanner at B after its restart: %s, want filtered", got)
	}
	etcd.Restart()
	eventuallyWithin(t, 30*time.Second, "B back in the fleet", func() bool { return again.fleetStatus().Connected })
	if st := again.fleetStatus(); st.Entries["a"] != 1 {
		t.Errorf("B's entries from a after catching up: %+v", st.Entries)
	}
	for _, l := range again.output() {
		if strings.Contains(l, `"event":"block"`) && strings.Contains(l, src) {
			t.Errorf("the restarted B applied the fleet's block again: %s", l)
		}
	}
}
