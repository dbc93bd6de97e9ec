package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/etcdtest"
	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// fail2ban is a fail2ban-server of the test's own: its configuration,
// socket and database in a folder of the test's, one jail (sshd) reading a
// log the test writes, banning through the shipped action.
type fail2ban struct {
	t   testing.TB
	dir string
	log string
	cmd *exec.Cmd
}

// startFail2ban runs the server; options are more of the action's, as
// `fleet="true"`.
func startFail2ban(t testing.TB, hbfSocket string, options ...string) *fail2ban {
	t.Helper()
	testenv.RequireCommand(t, "fail2ban-server")
	dir := t.TempDir()
	f := &fail2ban{t: t, dir: filepath.Join(dir, "etc"), log: filepath.Join(dir, "auth.log")}
	// Debian's filters and paths, none of its jails.
	if err := os.CopyFS(f.dir, os.DirFS("/etc/fail2ban")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(f.dir, "jail.d")); err != nil {
		t.Fatal(err)
	}
	action, err := os.ReadFile("../../deploy/fail2ban/action.d/hbf.py")
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"action.d/hbf.py": string(action),
		"fail2ban.local": fmt.Sprintf("[Definition]\nsocket = %s/f2b.sock\npidfile = %s/f2b.pid\ndbfile = %s/f2b.sqlite3\nlogtarget = %s/f2b.log\n",
			dir, dir, dir, dir),
		"jail.local": fmt.Sprintf("[sshd]\nenabled = true\nbackend = polling\nlogpath = %s\nmaxretry = 3\nfindtime = 600\nbantime = 600\n"+
			"action = hbf.py[%s]\n", f.log, strings.Join(append([]string{fmt.Sprintf("socket=%q", hbfSocket)}, options...), ", ")),
	} {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(f.log, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *fail2ban) start() {
	f.t.Helper()
	f.cmd = exec.Command("fail2ban-server", "-f", "-x", "-c", f.dir)
	f.cmd.Stdout, f.cmd.Stderr = os.Stderr, os.Stderr
	if err := f.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	eventually(f.t, "fail2ban's sshd jail up", func() bool { _, err := f.client("status", "sshd"); return err == nil })
}

// stop stops the server as an operator does, and waits for it.
func (f *fail2ban) stop() {
	if f.cmd == nil {
		return
	}
	f.client("stop")
	done := make(chan struct{})
	go func() { f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		f.cmd.Process.Kill()
		<-done
	}
	f.cmd = nil
}

func (f *fail2ban) client(args ...string) (string, error) {
	return f.clientWithin(10*time.Second, args...)
}

func (f *fail2ban) clientWithin(limit time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out, err := exec.CommandContext(ctx, "fail2ban-client", append([]string{"-c", f.dir}, args...)...).CombinedOutput()
	return string(out), err
}

// fail writes n failed sshd logins from addr, as sshd logs them through
// syslog: the prefix is what fail2ban's sshd filter expects.
func (f *fail2ban) fail(addr netip.Addr, n int) {
	f.t.Helper()
	log, err := os.OpenFile(f.log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	defer log.Close()
	for i := range n {
		fmt.Fprintf(log, "%s lab sshd[%d]: Failed password for root from %s port %d ssh2\n",
			time.Now().Format("Jan _2 15:04:05"), 1000+i, addr, 40000+i)
	}
}

// banOf is origin's block of addr in hbf, or nil.
func banOf(d *daemonProc, addr netip.Addr, origin string) *api.Block {
	return findBlock(d.listJSON(), netip.PrefixFrom(addr, addr.BitLen()).String(), origin)
}

// connects says whether ns reaches to.
func connects(ns *netlab.NS, to netip.AddrPort) bool {
	return dialOutcome(ns, to, time.Second) == "open"
}

// fail2ban bans through hbf with the shipped action: in the kernel, as
// the jail's, alone in what its unban ends, never a protected address,
// and its bans outlive fail2ban's stop and start.
func TestFail2banBansThroughHBF(t *testing.T) {
	lab := newLab(t, netlab.Options{Peers: []string{"client"}})
	d := startDaemon(t, lab)
	serveHTTP(t, lab.Host, 8080)
	f := startFail2ban(t, d.socket())
	client := lab.Peers["client"]
	web := netip.AddrPortFrom(lab.Host.Addr4, 8080)
	if !connects(client, web) {
		t.Fatal("the client cannot connect before any ban")
	}

	f.fail(client.Addr4, 3)
	eventually(t, "the jail's ban in hbf", func() bool { return banOf(d, client.Addr4, "fail2ban:sshd") != nil })
	b := banOf(d, client.Addr4, "fail2ban:sshd")
	if left := time.Until(b.Expires); left < 9*time.Minute || left > 10*time.Minute || !strings.Contains(b.Reason, "3 failures") {
		t.Errorf("the ban: %+v; want the jail's bantime of 10 minutes and its failures", b)
	}
	if connects(client, web) {
		t.Error("the banned client still connects")
	}

	// An operator's block of the same address stays when the jail unbans.
	d.mustCLI("block", client.Addr4.String(), "--reason", "the operator's")
	if out, err := f.client("set", "sshd", "unbanip", client.Addr4.String()); err != nil {
		t.Fatalf("unbanip: %v: %s", err, out)
	}
	eventually(t, "the jail's ban ended", func() bool { return banOf(d, client.Addr4, "fail2ban:sshd") == nil })
	if banOf(d, client.Addr4, "manual") == nil || connects(client, web) {
		t.Error("the jail's unban ended the operator's block too")
	}
	d.mustCLI("unblock", client.Addr4.String())
	eventually(t, "the client connects again", func() bool { return connects(client, web) })

	// A protected address: refused by hbf, and fail2ban runs on.
	f.fail(lab.Host.Addr4, 3)
	eventually(t, "fail2ban's ban of the host's own address", func() bool {
		out, _ := f.client("status", "sshd")
		return strings.Contains(out, lab.Host.Addr4.String())
	})
	if d.blocked(netip.PrefixFrom(lab.Host.Addr4, 32).String()) {
		t.Error("the host's own address blocked")
	}

	// fail2ban stopped and started with its database: the bans stay in
	// hbf, and none is made again.
	other := netip.MustParseAddr("198.51.100.7")
	f.fail(other, 3)
	eventually(t, "a second ban", func() bool { return banOf(d, other, "fail2ban:sshd") != nil })
	before := banOf(d, other, "fail2ban:sshd")
	f.stop()
	if banOf(d, other, "fail2ban:sshd") == nil {
		t.Fatal("fail2ban's stop ended its bans in hbf")
	}
	f.start()
	eventually(t, "fail2ban's ban restored from its database", func() bool {
		out, _ := f.client("status", "sshd")
		return strings.Contains(out, other.String())
	})
	if after := banOf(d, other, "fail2ban:sshd"); after == nil || !after.Created.Equal(before.Created) {
		t.Errorf("the ban was made again at the restart: created %v, then %v", before.Created, after.Created)
	}
}

// BenchmarkFail2banBans gives fail2ban 20,000 addresses to ban at once
// (fail2ban-client set sshd banip, as a botnet's burst or an imported
// list does) and times until hbf blocks every one, through the shipped
// action. IPv6 documentation addresses: there are not 20,000 IPv4 ones.
func BenchmarkFail2banBans(b *testing.B) {
	const bans = 20000
	lab := newLab(b, netlab.Options{})
	d := startDaemon(b, lab)
	f := startFail2ban(b, d.socket())
	for round := range b.N {
		args := []string{"set", "sshd", "banip"}
		for i := range bans {
			args = append(args, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x0f, 0x2b, byte(round), 0,
				0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)}).String())
		}
		start := time.Now()
		if out, err := f.clientWithin(5*time.Minute, args...); err != nil {
			b.Fatalf("banip: %v: %.200s", err, out)
		}
		eventuallyWithin(b, 5*time.Minute, "every ban in hbf", func() bool {
			n := 0
			for _, blk := range d.listJSON() {
				if blk.Origin == "fail2ban:sshd" {
					n++
				}
			}
			return n == (round+1)*bans
		})
		b.ReportMetric(time.Since(start).Seconds(), "s-20000-bans")
	}
}

// sshdLog is a lab sshd's log as syslog writes it, for fail2ban, and the
// time each line came.
type sshdLog struct {
	mu    sync.Mutex
	lines []string
	at    []time.Time
}

// startSSHD runs OpenSSH's sshd in ns with a configuration of the test's
// own, and writes its log to path with the syslog prefix fail2ban's sshd
// filter expects (sshd -e writes none). No account is needed: guesses at
// a user that does not exist fail as any others.
func startSSHD(t *testing.T, ns *netlab.NS, path string) *sshdLog {
	t.Helper()
	testenv.RequireCommand(t, "/usr/sbin/sshd")
	testenv.RequireCommand(t, "ssh-keygen")
	dir := t.TempDir()
	key := filepath.Join(dir, "hostkey")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	config := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("Port 22\nListenAddress 0.0.0.0\nListenAddress ::\nHostKey %s\nPidFile %s/sshd.pid\n"+
		"PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\nMaxStartups 100\nLogLevel VERBOSE\n", key, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // its privilege separation folder
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, "/usr/sbin/sshd", "-D", "-e", "-f", config)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	log := &sshdLog{}
	ready := make(chan struct{})
	go func() {
		listening := 0
		out, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer out.Close()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			now := time.Now()
			if strings.HasPrefix(sc.Text(), "Server listening") {
				listening++
				if listening == 2 { // on IPv4 and IPv6
					close(ready)
				}
			}
			log.mu.Lock()
			log.lines, log.at = append(log.lines, sc.Text()), append(log.at, now)
			log.mu.Unlock()
			fmt.Fprintf(out, "%s lab sshd[%d]: %s\n", now.Format("Jan _2 15:04:05"), cmd.Process.Pid, sc.Text())
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("sshd not listening after 10 s")
	}
	return log
}

// mark is where the log is now, for connections to read from.
func (l *sshdLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// connections returns the client ports of the connections sshd accepted
// from addr since the mark from, in order, and how many password guesses
// came on each.
func (l *sshdLog) connections(addr netip.Addr, from int) (order []int, guesses map[int]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	guesses = map[int]int{}
	for _, line := range l.lines[from:] {
		var port int
		if rest, ok := strings.CutPrefix(line, "Connection from "+addr.String()+" port "); ok {
			fmt.Sscanf(rest, "%d", &port)
			order = append(order, port)
		} else if strings.HasPrefix(line, "Failed password") {
			if _, rest, ok := strings.Cut(line, " from "+addr.String()+" port "); ok {
				fmt.Sscanf(rest, "%d", &port)
				guesses[port]++
			}
		}
	}
	return order, guesses
}

// guesses returns when sshd saw each password guess from addr.
func (l *sshdLog) guesses(addr netip.Addr) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []time.Time
	for i, line := range l.lines {
		if strings.HasPrefix(line, "Failed password") && strings.Contains(line, " from "+addr.String()+" ") {
			out = append(out, l.at[i])
		}
	}
	return out
}

// hydra guesses passwords over SSH in the lab: fail2ban, reading sshd's
// log, bans it through hbf, and no guess reaches sshd once the block is in
// the kernel.
func TestFail2banStopsHydraAgainstSSHD(t *testing.T) {
	testenv.RequireCommand(t, "hydra")
	lab := newLab(t, netlab.Options{Peers: []string{"attacker"}})
	d := startDaemon(t, lab)
	f := startFail2ban(t, d.socket())
	sshd := startSSHD(t, lab.Host, f.log)
	attacker := lab.Peers["attacker"]
	passwords := filepath.Join(t.TempDir(), "passwords")
	var list strings.Builder
	for i := range 40 {
		fmt.Fprintf(&list, "guess%d\n", i)
	}
	if err := os.WriteFile(passwords, []byte(list.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// -c 1: a second between each task's guesses, so fail2ban, which
	// reads the log every second, bans while hydra is still at it. Its
	// tasks are processes of their own: it runs in a process group, killed
	// whole once it has had its chance after the ban.
	cmd := attacker.Command(context.Background(), "hydra", "-l", "admin", "-P", passwords, "-t", "4", "-c", "1", "-w", "5", "-I",
		"ssh://"+lab.Host.Addr4.String())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopHydra := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
	defer stopHydra()
	eventuallyWithin(t, time.Minute, "hydra banned in hbf", func() bool {
		return banOf(d, attacker.Addr4, "fail2ban:sshd") != nil
	})
	ban := banOf(d, attacker.Addr4, "fail2ban:sshd")
	time.Sleep(5 * time.Second) // hydra goes on guessing, into the drop
	stopHydra()
	guesses := sshd.guesses(attacker.Addr4)
	var after int
	for _, at := range guesses {
		// A guess already in sshd when the block came in may still be
		// logged within moments; none may come later.
		if at.After(ban.Created.Add(time.Second)) {
			after++
		}
	}
	t.Logf("hydra made %d guesses of 40 that sshd saw, %d after the block; hydra: %s", len(guesses), after,
		strings.TrimSpace(out.String()))
	if len(guesses) >= 40 || after > 0 {
		t.Errorf("sshd saw %d guesses, %d a second after the block: want the ban to stop them", len(guesses), after)
	}
	if connects(attacker, netip.AddrPortFrom(lab.Host.Addr4, 22)) {
		t.Error("the banned attacker still reaches sshd")
	}
	if out, err := f.client("set", "sshd", "unbanip", attacker.Addr4.String()); err != nil {
		t.Fatalf("unbanip: %v: %s", err, out)
	}
	eventually(t, "the attacker reaches sshd again", func() bool { return connects(attacker, netip.AddrPortFrom(lab.Host.Addr4, 22)) })
}

// A jail's ban given with the fleet option reaches every host of the
// fleet, and its unban withdraws it there too.
func TestFail2banBansReachTheFleet(t *testing.T) {
	lab := newLab(t, netlab.Options{Peers: []string{"b", "etcd", "attacker"}})
	hostB, attacker := lab.Peers["b"], lab.Peers["attacker"]
	etcd := etcdtest.Start(t, etcdtest.Options{NS: lab.Peers["etcd"], Addr: lab.Peers["etcd"].Addr4})
	etcd.EnableAuth(fleetUser("a"), fleetUser("b"), adminUser)
	serveHTTP(t, hostB, 8080)
	a := startDaemon(t, lab, fleetArgs(t, etcd, "a", false)...)
	b := startDaemonOn(t, hostB, fleetArgs(t, etcd, "b", false)...)
	eventually(t, "both nodes in the fleet", func() bool {
		sa, sb := a.fleetStatus(), b.fleetStatus()
		return sa.Connected && sb.Connected && len(sa.Members) == 2 && len(sb.Members) == 2
	})
	f := startFail2ban(t, a.socket(), `fleet="true"`)

	failed := time.Now()
	f.fail(attacker.Addr4, 3)
	banned := a.blockEvent(attacker.Addr4.String(), "fail2ban sshd")
	applied := b.blockEvent(attacker.Addr4.String(), "(fleet: a)")
	// fail2ban polls its log once a second: most of the first figure.
	t.Logf("the 3rd failure logged to A's block: %v; A's block to B's: %v",
		banned.Sub(failed).Round(time.Millisecond), applied.Sub(banned).Round(time.Millisecond))
	if got := dialOutcome(attacker, hostPort(hostB.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("the attacker at B, which never saw it: %s, want filtered", got)
	}
	if out, err := f.client("set", "sshd", "unbanip", attacker.Addr4.String()); err != nil {
		t.Fatalf("unbanip: %v: %s", err, out)
	}
	eventually(t, "the unban withdrawn at B", func() bool {
		return dialOutcome(attacker, hostPort(hostB.Addr4, 8080), time.Second) == "open"
	})
}
