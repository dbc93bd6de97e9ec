package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/netlab"
)

func (d *daemonProc) mustCLI(args ...string) string {
	d.t.Helper()
	out, code := d.cli(args...)
	if code != 0 {
		d.t.Fatalf("hbf %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// refused runs a command that must fail with the given exit code and say
// want.
func (d *daemonProc) refused(code int, want string, args ...string) {
	d.t.Helper()
	out, got := d.cli(args...)
	if got != code || !strings.Contains(out, want) {
		d.t.Errorf("hbf %s: exit %d, %q; want exit %d saying %q", strings.Join(args, " "), got, strings.TrimSpace(out), code, want)
	}
}

func (d *daemonProc) listJSON(args ...string) []api.Block {
	d.t.Helper()
	var blocks []api.Block
	if err := json.Unmarshal([]byte(d.mustCLI(append([]string{"list", "-o", "json"}, args...)...)), &blocks); err != nil {
		d.t.Fatalf("hbf list -o json: %v", err)
	}
	return blocks
}

func findBlock(blocks []api.Block, prefix, origin string) *api.Block {
	for i, b := range blocks {
		if b.Prefix.String() == prefix && b.Origin == origin {
			return &blocks[i]
		}
	}
	return nil
}

func TestCLIVerbs(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "scanner", "spare"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082)
	client, scanner, spare := lab.Peers["client"], lab.Peers["scanner"], lab.Peers["spare"]
	host := lab.Host.Addr4
	d := startDaemon(t, lab, "--detach-on-exit=false")

	// block: in force in the kernel when the command returns.
	if out := d.mustCLI("block", client.Addr4.String(), "--for", "2h", "--reason", "abuse"); !strings.Contains(out, "blocked "+client.Addr4.String()) {
		t.Errorf("block said %q", out)
	}
	if got := dialOutcome(client, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("blocked client's connection: %s", got)
	}
	d.waitLine(line("Blocked %s for 2h0m0s: abuse", client.Addr4))
	b := findBlock(d.listJSON(), client.Addr4.String()+"/32", "manual")
	if b == nil || b.Reason != "abuse" || b.By != "uid 0" || b.Packets < 1 ||
		time.Until(b.Expires) < 119*time.Minute || time.Until(b.Expires) > 121*time.Minute {
		t.Errorf("list shows the manual block as %+v", b)
	}
	table := d.mustCLI("list")
	if !strings.HasPrefix(table, "PREFIX") || !regexp.MustCompile(regexp.QuoteMeta(client.Addr4.String())+`\s+manual\s+abuse`).MatchString(table) {
		t.Errorf("list table:\n%s", table)
	}
	why := d.mustCLI("why", client.Addr4.String())
	if !strings.Contains(why, "blocked by "+client.Addr4.String()+" (manual): abuse") {
		t.Errorf("why said:\n%s", why)
	}

	// Refusals, each naming its rule; usage errors exit 2.
	d.refused(1, "0.0.0.0/0 would block every IPv4 source", "block", "0.0.0.0/0")
	d.refused(1, "::/0 would block every IPv6 source", "block", "::/0")
	d.refused(1, "wider than /8", "block", "10.0.0.0/7")
	d.refused(1, "wider than /32", "block", "2001:db8::/31")
	d.refused(1, "is loopback", "block", "127.0.0.1")
	d.refused(1, "is an address of this host", "block", host.String())
	d.refused(1, "contains "+host.String()+"/32, an address of this host", "block", "192.0.2.0/24")
	d.refused(1, `"10.0.0.300" is not an IP or CIDR`, "block", "10.0.0.300")
	d.refused(1, "has host bits set", "block", "198.51.100.7/24")
	d.refused(2, "name at least one IP or CIDR", "block")
	d.refused(2, "or --all", "unblock")
	d.refused(2, `"nope" is not an IP address`, "why", "nope")
	d.refused(2, `-o "yaml": use table or json`, "list", "-o", "yaml")

	// allow: refuses blocks inside; the fixed allows cannot be removed.
	d.mustCLI("allow", "198.51.100.0/24", "--reason", "office")
	d.refused(1, "198.51.100.7/32 is on the allowlist (office): never blocked", "block", "198.51.100.7")
	var allows []api.Allow
	json.Unmarshal([]byte(d.mustCLI("list", "--allowed", "-o", "json")), &allows)
	origins := map[string]string{}
	for _, a := range allows {
		origins[a.Prefix.String()] = a.Origin
	}
	if origins["198.51.100.0/24"] != "manual" || origins[host.String()+"/32"] != "host" || origins["127.0.0.0/8"] != "loopback" {
		t.Errorf("allowlist %v", origins)
	}
	d.mustCLI("disallow", "198.51.100.0/24")
	d.refused(1, "always allowed", "disallow", host.String())
	d.refused(1, "is not on the allowlist", "disallow", "198.51.100.0/24")

	// A scan: listed with its evidence.
	for port := 8080; port <= 8083; port++ {
		dialOutcome(scanner, hostPort(host, port), time.Second)
	}
	d.waitLine(line("Blocked %s for 1h0m0s: port scan", scanner.Addr4))
	sb := findBlock(d.listJSON(), scanner.Addr4.String()+"/32", "scan")
	if sb == nil || len(sb.Ports) != 4 || sb.Ports[0].Seen.IsZero() || sb.By != "kernel" {
		t.Errorf("scan block listed as %+v", sb)
	}
	if why := d.mustCLI("why", scanner.Addr4.String()); !strings.Contains(why, "scan evidence: 8080 at") {
		t.Errorf("why for the scanner:\n%s", why)
	}

	// unblock: the client gets through again.
	d.mustCLI("unblock", client.Addr4.String())
	if got := dialOutcome(client, hostPort(host, 8080), 5*time.Second); got != "open" {
		t.Errorf("unblocked client's connection: %s", got)
	}
	d.refused(1, "is not blocked", "unblock", client.Addr4.String())

	// status.
	var st api.Status
	if err := json.Unmarshal([]byte(d.mustCLI("status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Interfaces) != 1 || st.Interfaces[0].Name != netlab.Iface || st.Counters["scans_detected"] != 1 ||
		st.Entries["blocks_scan"] != 1 || st.Store != "ok" || st.Settings["max_ports"] != "3" {
		t.Errorf("status %+v", st)
	}
	if out := d.mustCLI("status"); !strings.Contains(out, "interface  eth0 (") {
		t.Errorf("status table:\n%s", out)
	}

	// events: the recent ones, then the live stream.
	recent := d.mustCLI("events", "-o", "json")
	for _, kind := range []string{`"event":"block"`, `"event":"portscan"`, `"event":"unblock"`, `"event":"allow"`, `"event":"disallow"`} {
		if !strings.Contains(recent, kind) {
			t.Errorf("recent events lack %s:\n%s", kind, recent)
		}
	}
	if text := d.mustCLI("events"); !regexp.MustCompile(`(?m)` + timePrefix[1:] + `Unblocked ` + regexp.QuoteMeta(client.Addr4.String())).MatchString(text) {
		t.Errorf("events as text:\n%s", text)
	}
	ctx, cancel := context.WithCancel(context.Background())
	follow := exec.CommandContext(ctx, hbfBin, "events", "--follow", "-o", "json", "--socket", d.socket())
	stdout, _ := follow.StdoutPipe()
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	d.mustCLI("block", spare.Addr4.String())
	deadline := time.After(10 * time.Second)
	for found := false; !found; {
		select {
		case l := <-lines:
			found = strings.Contains(l, `"event":"block"`) && strings.Contains(l, spare.Addr4.String())
		case <-deadline:
			t.Fatal("events --follow did not show the new block")
		}
	}
	cancel()
	follow.Wait()

	// unblock --all: every manual and scan block.
	if out := d.mustCLI("unblock", "--all"); !strings.Contains(out, "unblocked "+scanner.Addr4.String()) || !strings.Contains(out, "unblocked "+spare.Addr4.String()) {
		t.Errorf("unblock --all said %q", out)
	}
	if blocks := d.listJSON(); len(blocks) != 0 {
		t.Errorf("blocks left after unblock --all: %+v", blocks)
	}

	// The audit log: who, what, accepted or refused.
	audit, err := os.ReadFile(filepath.Join(d.stateDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"uid":0`, `"action":"block","target":"` + client.Addr4.String() + `","prefix":"` + client.Addr4.String() + `/32","for":"2h0m0s","reason":"abuse","result":"accepted"`,
		`"action":"block","target":"0.0.0.0/0","prefix":"0.0.0.0/0","result":"refused","error":"0.0.0.0/0 would block every IPv4 source"`,
	} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit log lacks %s:\n%s", want, audit)
		}
	}

	// stop: the daemon exits, enforcement stays.
	d.mustCLI("block", client.Addr4.String())
	if out := d.mustCLI("stop"); !strings.Contains(out, "enforcement stays") {
		t.Errorf("stop said %q", out)
	}
	if err := d.wait(20 * time.Second); err != nil {
		t.Errorf("daemon exit after hbf stop: %v", err)
	}
	if got := dialOutcome(client, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("after hbf stop the blocked client's connection is %s", got)
	}
	d.refused(1, "no hbf daemon at "+d.socket(), "status")
}

func TestCLIUninstallThroughDaemon(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client"}})
	serveHTTP(t, lab.Host, 8080)
	d := startDaemon(t, lab, "--detach-on-exit=false")
	d.mustCLI("block", lab.Peers["client"].Addr4.String())
	if out := d.mustCLI("uninstall"); !strings.Contains(out, "enforcement removed") {
		t.Errorf("uninstall said %q", out)
	}
	d.wait(20 * time.Second)
	noXDP(t, lab.Host)
	if _, err := os.Stat(d.pinPath); !os.IsNotExist(err) {
		t.Errorf("pins left: %v", err)
	}
	if got := dialOutcome(lab.Peers["client"], hostPort(lab.Host.Addr4, 8080), 5*time.Second); got != "open" {
		t.Errorf("after uninstall: %s", got)
	}
}

// Others than root cannot reach the API: the socket is 0600 root's.
func TestCLIRefusesNonRoot(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{})
	d := startDaemon(t, lab)
	st, err := os.Stat(d.socket())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("socket mode %v uid %d, want 0600 root", st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Uid)
	}
	// Let nobody reach the socket's folder, so that the socket's own mode
	// is what refuses.
	if err := os.Chmod(d.stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"status"}, {"block", "198.51.100.7"}} {
		cmd := exec.Command(hbfBin, append(args, "--socket", d.socket())...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || strings.TrimSpace(string(out)) != "hbf: permission denied: hbf's socket is root-only" {
			t.Errorf("hbf %v as nobody: %v: %q", args, err, out)
		}
	}
	if blocks := d.listJSON(); len(blocks) != 0 {
		t.Errorf("nobody changed the blocks: %+v", blocks)
	}
}

func TestBlockExpiresOnTime(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client"}})
	serveHTTP(t, lab.Host, 8080)
	client := lab.Peers["client"]
	d := startDaemon(t, lab, "--window", "1s")
	d.mustCLI("block", client.Addr4.String(), "--for", "2s")
	if got := dialOutcome(client, hostPort(lab.Host.Addr4, 8080), 500*time.Millisecond); got != "filtered" {
		t.Fatalf("blocked: %s", got)
	}
	if b := findBlock(d.listJSON(), client.Addr4.String()+"/32", "manual"); b == nil {
		t.Fatal("not listed")
	}
	time.Sleep(2500 * time.Millisecond)
	if got := dialOutcome(client, hostPort(lab.Host.Addr4, 8080), 5*time.Second); got != "open" {
		t.Errorf("after expiry: %s", got)
	}
	if blocks := d.listJSON(); len(blocks) != 0 {
		t.Errorf("listed after expiry: %+v", blocks)
	}
}

// Monitor mode reports scans as "would block" and blocks nothing for them,
// while manual blocks stay in force; `hbf mode` switches at run time.
func TestMonitorMode(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "scanner", "scanner2"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082)
	host := lab.Host.Addr4
	scanner := lab.Peers["scanner"]
	d := startDaemon(t, lab, "--mode", "monitor")
	if out := d.mustCLI("mode"); strings.TrimSpace(out) != "monitor" {
		t.Errorf("hbf mode said %q", out)
	}
	d.mustCLI("block", lab.Peers["client"].Addr4.String())

	states := nmap(t, scanner, host, "8080-8089", "-sS", "-T4")
	if got := learned(states); len(got) != 10 {
		t.Errorf("in monitor mode the scanner learned %d of 10 ports", len(got))
	}
	d.waitLine(line(`Port scan detected: %s -> %s on ports [0-9,]+ \(monitor mode: would block\)`, scanner.Addr4, host))
	if blocked := d.matching(regexp.MustCompile("Blocked " + regexp.QuoteMeta(scanner.Addr4.String()))); len(blocked) != 0 {
		t.Errorf("monitor mode blocked the scanner: %v", blocked)
	}
	if got := dialOutcome(lab.Peers["client"], hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("in monitor mode the manual block let the client through: %s", got)
	}
	if v := scrape(t, d).value(t, "hbf_port_scans_monitored_total", ""); v != 1 {
		t.Errorf("scans monitored %v, want 1", v)
	}

	d.mustCLI("mode", "enforce")
	for port := 8080; port <= 8083; port++ {
		dialOutcome(lab.Peers["scanner2"], hostPort(host, port), time.Second)
	}
	d.waitLine(line("Blocked %s for 1h0m0s: port scan", lab.Peers["scanner2"].Addr4))
	d.refused(2, `"watch" is not a mode`, "mode", "watch")
}
