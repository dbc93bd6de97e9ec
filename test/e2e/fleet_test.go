package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/etcdtest"
	"github.com/hbf-firewall/hbf/internal/netlab"
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
	if out := b.mustCLI("why", src); !strings.Contains(out, "(fleet:a)") {
		t.Errorf("hbf why on B:\n%s", out)
	}

	// A fleet block of B's own address: A publishes it, B refuses it and
	// keeps serving.
	a.mustCLI("block", "--fleet", hostB.Addr4.String(), "--reason", "a mistake")
	eventually(t, "B refused the block of its own address", func() bool {
		return scrape(t, b).value(t, "hbf_fleet_rejected_total", "protected") >= 1
	})
	if got := dialOutcome(client, hostPort(hostB.Addr4, 8080), 2*time.Second); got != "open" {
		t.Errorf("the client at B after a fleet block of B: %s, want open", got)
	}
	a.mustCLI("unblock", hostB.Addr4.String())

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
