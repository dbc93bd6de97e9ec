package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/netlab"
)

// eventually polls cond for up to 10 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, 10*time.Second, what, cond)
}

// eventuallyWithin is eventually for what takes longer: a lost connection
// noticed through keepalives.
func eventuallyWithin(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *daemonProc) status() api.Status {
	d.t.Helper()
	var st api.Status
	if err := json.Unmarshal([]byte(d.mustCLI("status", "-o", "json")), &st); err != nil {
		d.t.Fatal(err)
	}
	return st
}

func TestConfigReloadAndWatchedLists(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"listed", "scanner"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082, 8083, 8084, 8085)
	host := lab.Host.Addr4
	listed, scanner := lab.Peers["listed"], lab.Peers["scanner"]
	dir := t.TempDir()
	list := filepath.Join(dir, "blocklist.txt")
	logFile := filepath.Join(dir, "events.log")
	conf := filepath.Join(dir, "hbf.yaml")
	os.WriteFile(list, []byte("# nobody yet\n"), 0o600)
	write := func(content string) { os.WriteFile(conf, []byte(content), 0o600) }
	write("max-ports: 3\nblocklist: [" + list + "]\nlog-file: " + logFile + "\n")
	d := startDaemon(t, lab, "--config", conf)
	if st := d.status(); st.Settings["config"] != conf || len(st.Lists) != 1 {
		t.Fatalf("status %+v", st)
	}

	// An edit applies without a restart; removing the line unblocks.
	os.WriteFile(list, []byte(listed.Addr4.String()+" ; added by hand\n"), 0o600)
	eventually(t, "the added line blocks", func() bool { return dialOutcome(listed, hostPort(host, 8080), 500*time.Millisecond) == "filtered" })
	os.WriteFile(list, []byte("# empty again\n"), 0o600)
	eventually(t, "the removed line unblocks", func() bool { return dialOutcome(listed, hostPort(host, 8080), 2*time.Second) == "open" })

	// A bad edit keeps the version in force and says so.
	os.WriteFile(list, []byte(listed.Addr4.String()+"\n10.0.0.300\n"), 0o600)
	eventually(t, "the bad edit is reported", func() bool {
		st := d.status()
		return len(st.Lists) == 1 && strings.Contains(st.Lists[0].Status, `line 2: "10.0.0.300" is not an IP or CIDR`)
	})
	if got := dialOutcome(listed, hostPort(host, 8080), 2*time.Second); got != "open" {
		t.Errorf("a refused edit took effect: %s", got)
	}

	// A good reload: a new threshold.
	write("max-ports: 5\nblocklist: [" + list + "]\nlog-file: " + logFile + "\n")
	if out := d.mustCLI("reload"); !strings.Contains(out, "reloaded") {
		t.Errorf("reload said %q", out)
	}
	if st := d.status(); st.Settings["max_ports"] != "5" {
		t.Errorf("max_ports after reload: %s", st.Settings["max_ports"])
	}
	for port := 8080; port <= 8084; port++ {
		if got := dialOutcome(scanner, hostPort(host, port), 2*time.Second); got != "open" {
			t.Errorf("port %d with max-ports 5: %s", port, got)
		}
	}

	// A bad reload is refused whole; the running configuration stays.
	write("max-ports: 0\nblocklist: [" + list + "]\n")
	d.refused(1, "reload refused, the running configuration stays: --max-ports 0: must be between 1 and 32", "reload")
	write("max-ports: 5\nblocklist: [" + list + ", " + filepath.Join(dir, "missing.txt") + "]\n")
	d.refused(1, "missing.txt: no such file or directory", "reload")
	if st := d.status(); st.Settings["max_ports"] != "5" || len(st.Lists) != 1 {
		t.Errorf("a refused reload changed the settings: %+v", st.Settings)
	}

	// SIGHUP reopens the log file: logrotate moved it away.
	write("max-ports: 5\nblocklist: [" + list + "]\nlog-file: " + logFile + "\nxdp-mode: generic\n")
	os.Rename(logFile, logFile+".1")
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "the log file is reopened", func() bool { _, err := os.Stat(logFile); return err == nil })
	// The file is reopened before the reload finishes: wait for its end.
	eventually(t, "a changed XDP mode is reported as restart-only", func() bool {
		return strings.Contains(d.stderrText(), "settings that take effect at the next start")
	})
	d.mustCLI("block", scanner.Addr4.String())
	eventually(t, "the new log file gets events", func() bool {
		data, _ := os.ReadFile(logFile)
		return strings.Contains(string(data), "Blocked "+scanner.Addr4.String())
	})
}
