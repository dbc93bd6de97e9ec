package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// limitEvent is the JSON event of a source over a connection limit.
type limitEvent struct {
	Event       string `json:"event"`
	Src         string `json:"src"`
	Port        uint16 `json:"port"`
	Proto       string `json:"proto"`
	Limit       int    `json:"limit"`
	Window      string `json:"window"`
	Allowlisted bool   `json:"allowlisted"`
	Throttled   bool   `json:"throttled"`
}

// limitEvents are the daemon's limit events from src so far.
func (d *daemonProc) limitEvents(src netip.Addr) []limitEvent {
	var out []limitEvent
	for _, l := range d.output() {
		var ev limitEvent
		if json.Unmarshal([]byte(l), &ev) == nil && ev.Event == "limit" && ev.Src == src.String() {
			out = append(out, ev)
		}
	}
	return out
}

// limitEvent waits for the first limit event from src.
func (d *daemonProc) limitEvent(src netip.Addr) limitEvent {
	d.t.Helper()
	eventually(d.t, "a limit event from "+src.String(), func() bool { return len(d.limitEvents(src)) > 0 })
	return d.limitEvents(src)[0]
}

// echoServer answers each line a client sends on the host's port with the
// same line, and counts the connections that delivered one.
type echoServer struct {
	mu        sync.Mutex
	delivered int
}

func serveEcho(t testing.TB, ns *netlab.NS, port int) *echoServer {
	t.Helper()
	ln, err := ns.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	e := &echoServer{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				e.mu.Lock()
				e.delivered++
				e.mu.Unlock()
				io.WriteString(c, line)
			}()
		}
	}()
	return e
}

func (e *echoServer) deliveries() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.delivered
}

// echo connects from ns to addr and says whether the connection opened,
// and whether a line went there and back.
func echo(ns *netlab.NS, addr netip.AddrPort) (opened, answered bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return false, false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return true, false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return true, err == nil && line == "ping\n"
}

// A client may make 3 connections in the window; its 4th completes its
// handshake, is blocked in the kernel at that moment and delivers nothing;
// the source is reported and blocked once, and hbf list, why, status and
// /metrics say so. IPv4 and IPv6.
func TestConnectionLimitBlocksTheConnectionPastIt(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client"}})
	srv := serveEcho(t, lab.Host, 7000)
	d := startDaemon(t, lab, "--log-format", "json", "--limit", "7000/tcp=3/60s")
	client := lab.Peers["client"]
	for _, tc := range []struct {
		name string
		src  netip.Addr
		dst  netip.AddrPort
	}{
		{"IPv4", client.Addr4, netip.AddrPortFrom(lab.Host.Addr4, 7000)},
		{"IPv6", client.Addr6, netip.AddrPortFrom(lab.Host.Addr6, 7000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.deliveries()
			for i := range 3 {
				if opened, answered := echo(client, tc.dst); !opened || !answered {
					t.Fatalf("connection %d of 3: opened %v, answered %v; want both", i+1, opened, answered)
				}
			}
			if got := d.limitEvents(tc.src); len(got) != 0 {
				t.Fatalf("3 connections under a limit of 3 were reported: %+v", got)
			}
			opened, answered := echo(client, tc.dst)
			if !opened || answered {
				t.Fatalf("the 4th connection: opened %v, answered %v; want its handshake only", opened, answered)
			}
			if got := srv.deliveries() - before; got != 3 {
				t.Errorf("%d connections delivered data, want the first 3", got)
			}
			ev := d.limitEvent(tc.src)
			if ev.Port != 7000 || ev.Proto != "tcp" || ev.Limit != 3 || ev.Window != "1m" || ev.Throttled || ev.Allowlisted {
				t.Errorf("limit event %+v, want 7000/tcp=3/1m", ev)
			}
			d.blockEvent(tc.src.String(), "connection limit 7000/tcp")
			if got := dialOutcome(client, tc.dst, time.Second); got != "filtered" {
				t.Errorf("a 5th connection: %s, want filtered", got)
			}
			b := findBlock(d.listJSON(), host(tc.src), "limit")
			if b == nil || b.Reason != "connection limit 7000/tcp" {
				t.Fatalf("hbf list: %+v, want the source blocked with origin limit", d.listJSON())
			}
			if why := d.mustCLI("why", tc.src.String()); !strings.Contains(why, "(limit): connection limit 7000/tcp") {
				t.Errorf("hbf why:\n%s", why)
			}
			if n := len(d.limitEvents(tc.src)); n != 1 {
				t.Errorf("%d limit events from the source, want 1", n)
			}
		})
	}
	st := d.status()
	if len(st.Limits) != 1 || st.Limits[0] != (api.LimitStatus{Limit: "7000/tcp=3/1m", Port: 7000, Proto: "tcp", Count: 3,
		Window: "1m", Action: "block", Counted: 8, Exceeded: 2, Blocked: 2}) {
		t.Errorf("status limits %+v, want 8 counted, 2 over, 2 blocked", st.Limits)
	}
	if m := d.metrics(); !strings.Contains(m, `hbf_limit_blocks_total{port="7000",proto="tcp"} 2`) {
		t.Errorf("/metrics lacks the limit's 2 blocks:\n%s", grepLines(m, "hbf_limit_"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Forged SYNs with a client's address, any number, and a flood of random
// sources during its connections, neither count nor throttle: the client
// keeps exactly its 3 connections.
func TestConnectionLimitIgnoresForgedSYNs(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "hping3")
	lab := newLab(t, netlab.Options{Peers: []string{"client", "forger"}})
	serveEcho(t, lab.Host, 7000)
	d := startDaemon(t, lab, "--log-format", "json", "--limit", "7000/tcp=3/60s", "--limit", "7001/tcp=3/60s:drop")
	serveEcho(t, lab.Host, 7001)
	client, forger := lab.Peers["client"], lab.Peers["forger"]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, port := range []string{"7000", "7001"} {
		if out, err := forger.Run(ctx, "hping3", "-S", "-a", client.Addr4.String(), "-p", port, "-c", "200", "-i", "u500",
			lab.Host.Addr4.String()); err != nil && !strings.Contains(out, "packets transmitted") {
			t.Fatalf("hping3 -a: %v: %s", err, out)
		}
	}
	flood := forger.Command(ctx, "hping3", "-S", "--rand-source", "-p", "7000", "-c", "5000", "-i", "u200", lab.Host.Addr4.String())
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	defer flood.Wait()
	defer flood.Process.Kill()
	for _, port := range []uint16{7000, 7001} {
		for i := range 3 {
			if opened, answered := echo(client, netip.AddrPortFrom(lab.Host.Addr4, port)); !opened || !answered {
				t.Fatalf("the client's connection %d to %d amid forged SYNs: opened %v, answered %v", i+1, port, opened, answered)
			}
		}
	}
	if evs := d.limitEvents(client.Addr4); len(evs) != 0 {
		t.Fatalf("forged SYNs got the client reported: %+v", evs)
	}
	if blocks := d.listJSON(); len(blocks) != 0 {
		t.Fatalf("forged SYNs got blocks made: %+v", blocks)
	}
	// Its count is its own: the 4th is over.
	if opened, answered := echo(client, netip.AddrPortFrom(lab.Host.Addr4, 7000)); !opened || answered {
		t.Fatalf("the client's 4th connection: opened %v, answered %v; want it blocked", opened, answered)
	}
	d.blockEvent(client.Addr4.String(), "connection limit 7000/tcp")
}

// A limit with :drop throttles: the 3rd connection of a 2/60s limit finds
// its SYNs dropped, and nothing is blocked. A protected source is counted
// and reported, never refused.
func TestDropLimitThrottlesAndSparesProtected(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "admin"}})
	serveEcho(t, lab.Host, 7000)
	admin := lab.Peers["admin"]
	d := startDaemon(t, lab, "--log-format", "json", "--limit", "7000/tcp=2/60s:drop", "--allow", admin.Addr4.String())
	client := lab.Peers["client"]
	to := netip.AddrPortFrom(lab.Host.Addr4, 7000)
	for i := range 2 {
		if opened, answered := echo(client, to); !opened || !answered {
			t.Fatalf("connection %d of 2: opened %v, answered %v", i+1, opened, answered)
		}
	}
	if got := dialOutcome(client, to, time.Second); got != "filtered" {
		t.Fatalf("the 3rd connection: %s, want filtered (its SYNs dropped)", got)
	}
	if ev := d.limitEvent(client.Addr4); !ev.Throttled {
		t.Errorf("limit event %+v, want throttled", ev)
	}
	if blocks := d.listJSON(); len(blocks) != 0 {
		t.Errorf(":drop made blocks: %+v", blocks)
	}
	for i := range 5 {
		if opened, answered := echo(admin, to); !opened || !answered {
			t.Fatalf("the protected source's connection %d: opened %v, answered %v", i+1, opened, answered)
		}
	}
	if ev := d.limitEvent(admin.Addr4); !ev.Allowlisted {
		t.Errorf("the protected source's event %+v, want allowlisted", ev)
	}
	if st := d.status(); len(st.Limits) != 1 || st.Limits[0].Dropped == 0 || st.Limits[0].Blocked != 0 {
		t.Errorf("status limits %+v, want drops and no block", st.Limits)
	}
}

// A UDP limit throttles datagrams and never blocks.
func TestUDPLimitThrottles(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client"}})
	var pc net.PacketConn
	if err := lab.Host.Do(func() (err error) { pc, err = net.ListenPacket("udp", ":5060"); return err }); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	d := startDaemon(t, lab, "--log-format", "json", "--limit", "5060/udp=3/60s")
	var c net.Conn
	if err := lab.Peers["client"].Do(func() (err error) {
		c, err = net.Dial("udp", netip.AddrPortFrom(lab.Host.Addr4, 5060).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	answered := 0
	buf := make([]byte, 64)
	for i := range 6 {
		fmt.Fprintf(c, "datagram %d", i)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(buf); err == nil {
			answered++
		}
	}
	if answered != 3 {
		t.Errorf("%d of 6 datagrams answered under 5060/udp=3/60s, want 3", answered)
	}
	if ev := d.limitEvent(lab.Peers["client"].Addr4); !ev.Throttled || ev.Proto != "udp" {
		t.Errorf("limit event %+v, want a throttled UDP source", ev)
	}
	if blocks := d.listJSON(); len(blocks) != 0 {
		t.Errorf("a UDP limit made blocks: %+v", blocks)
	}
}

// runHydra guesses the passwords against the host's sshd from ns, until
// it is done or ctx ends, and returns its output.
func runHydra(ctx context.Context, t *testing.T, ns *netlab.NS, target netip.Addr, passwords string) string {
	t.Helper()
	args := []string{"-l", "admin", "-P", passwords, "-t", "4", "-w", "5", "-I"}
	host := target.String()
	if target.Is6() {
		args, host = append(args, "-6"), "["+host+"]"
	}
	cmd := ns.Command(context.Background(), "hydra", append(args, "ssh://"+host)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its tasks are processes of their own: a process group, killed whole.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	return out.String()
}

// hydra against a real sshd: without a limit it makes every guess of its
// list; with --limit 22/tcp=3/60s its 4th connection is its last, and no
// password guess comes on it or after. IPv4 and IPv6.
func TestConnectionLimitStopsHydra(t *testing.T) {
	testenv.RequireCommand(t, "hydra")
	lab := newLab(t, netlab.Options{Peers: []string{"attacker"}})
	logFile := filepath.Join(t.TempDir(), "sshd.log")
	if err := os.WriteFile(logFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sshd := startSSHD(t, lab.Host, logFile)
	attacker := lab.Peers["attacker"]
	passwords := filepath.Join(t.TempDir(), "passwords")
	var list strings.Builder
	for i := range 24 {
		fmt.Fprintf(&list, "guess%d\n", i)
	}
	if err := os.WriteFile(passwords, []byte(list.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	// Without hbf: the baseline, over IPv4.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	runHydra(ctx, t, attacker, lab.Host.Addr4, passwords)
	cancel()
	conns, guesses := sshd.connections(attacker.Addr4, 0)
	total := 0
	for _, n := range guesses {
		total += n
	}
	t.Logf("without hbf: hydra made %d connections and %d password guesses", len(conns), total)
	if total < 24 {
		t.Fatalf("without hbf, sshd saw %d guesses of 24: the lab's baseline is wrong", total)
	}

	d := startDaemon(t, lab, "--log-format", "json", "--limit", "22/tcp=3/60s")
	for _, src := range []netip.Addr{attacker.Addr6, attacker.Addr4} {
		dst := lab.Host.Addr4
		if src.Is6() {
			dst = lab.Host.Addr6
		}
		// The IPv4 run comes after the baseline's connections left the
		// window of a limit that did not exist then: hbf counts from its
		// start.
		from := sshd.mark()
		out := make(chan string, 1)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { out <- runHydra(ctx, t, attacker, dst, passwords) }()
		d.blockEvent(src.String(), "connection limit 22/tcp")
		time.Sleep(5 * time.Second) // hydra goes on, into the drop
		conns, guesses := sshd.connections(src, from)
		total, late := 0, 0
		for i, port := range conns {
			total += guesses[port]
			if i >= 3 {
				late += guesses[port]
			}
		}
		t.Logf("with hbf (%s): sshd accepted %d connections and saw %d guesses, %d after the 3rd connection",
			src, len(conns), total, late)
		if late > 0 || len(conns) > 4 {
			t.Errorf("hydra's guesses reached sshd past its 3rd connection (%d), or its 5th connection did (%d accepted)", late, len(conns))
		}
		if n := len(d.limitEvents(src)); n != 1 {
			t.Errorf("%d limit events from %s, want 1", n, src)
		}
		cancel()
		t.Logf("hydra: %s", lastLines(<-out, 3))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// Limits hold while no daemon runs: the connection tracer's link is
// pinned, so a client's 4th connection after a kill -9 gets it blocked in
// the kernel, and the next daemon adopts that block with its origin. The
// next daemon's tracer replaces the old one: each connection counts once.
func TestConnectionLimitHoldsWithoutDaemon(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "other"}})
	serveEcho(t, lab.Host, 7000)
	args := []string{"--log-format", "json", "--limit", "7000/tcp=3/60s"}
	a := startDaemon(t, lab, append([]string{"--detach-on-exit=false"}, args...)...)
	client, other := lab.Peers["client"], lab.Peers["other"]
	to := netip.AddrPortFrom(lab.Host.Addr4, 7000)
	echo(client, to)
	a.kill9()
	for i := range 2 {
		if opened, answered := echo(client, to); !opened || !answered {
			t.Fatalf("connection %d with no daemon: opened %v, answered %v", i+2, opened, answered)
		}
	}
	if opened, answered := echo(client, to); !opened || answered {
		t.Fatalf("the 4th connection with no daemon: opened %v, answered %v; want it blocked", opened, answered)
	}
	b := a.restart(lab, args...)
	if blk := findBlock(b.listJSON(), host(client.Addr4), "limit"); blk == nil {
		t.Fatalf("the next daemon's list: %+v, want the client blocked with origin limit", b.listJSON())
	}
	// One tracer, not two: 3 connections of another source pass.
	for i := range 3 {
		if opened, answered := echo(other, to); !opened || !answered {
			t.Fatalf("another source's connection %d after the restart: opened %v, answered %v", i+1, opened, answered)
		}
	}
	if st := b.status(); len(st.Limits) != 1 || st.Limits[0].Counted != 7 || st.Limits[0].Blocked != 1 {
		t.Errorf("status limits %+v, want 7 counted across the restart, 1 blocked", st.Limits)
	}
}
