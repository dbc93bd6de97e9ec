package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// liftICMPLimits lets the host namespace answer every closed UDP port:
// Linux's ICMP budget would otherwise hide how many ports a scan learns.
func liftICMPLimits(t *testing.T, ns *netlab.NS) {
	t.Helper()
	for _, kv := range []string{"net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=1000000",
		"net.ipv4.icmp_msgs_burst=1000000", "net.ipv6.icmp.ratelimit=0"} {
		if out, err := ns.Run(context.Background(), "sysctl", "-qw", kv); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
}

// snmp reads one counter of /proc/net/snmp in the namespace: proto is
// the line's prefix ("Icmp", "Tcp"), field the column's name.
func snmp(t testing.TB, ns *netlab.NS, proto, field string) uint64 {
	t.Helper()
	out, err := ns.Run(context.Background(), "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	// Two lines a protocol: the names, then the values.
	var names []string
	for l := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != proto+":" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == field && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	t.Fatalf("no %s %s in /proc/net/snmp", proto, field)
	return 0
}

// unreachables is how many ICMP and ICMPv6 destination unreachables the
// namespace has sent: each closed UDP port it told a scanner about.
func unreachables(t *testing.T, ns *netlab.NS) uint64 {
	t.Helper()
	n := snmp(t, ns, "Icmp", "OutDestUnreachs")
	snmp6, err := ns.Run(context.Background(), "cat", "/proc/net/snmp6")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(snmp6, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Icmp6OutDestUnreachs" {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			n += v
		}
	}
	return n
}

// TestUDPScanLearnsAtMostN: nmap -sU learns every closed port of a host
// without hbf, and at most N with it, over IPv4 and IPv6; the scanner is
// blocked and the scan reported with its UDP ports.
func TestUDPScanLearnsAtMostN(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := map[bool]string{false: "IPv4", true: "IPv6"}[v6]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			lab := newLab(t, netlab.Options{Peers: []string{"before", "scanner"}})
			liftICMPLimits(t, lab.Host)
			host, before, scanner := lab.Host.Addr4, lab.Peers["before"], lab.Peers["scanner"]
			src := scanner.Addr4
			if v6 {
				host, src = lab.Host.Addr6, scanner.Addr6
			}
			args := []string{"-sU", "-T5", "--max-retries", "1"}

			sent := unreachables(t, lab.Host)
			without := learned(nmap(t, before, host, "2000-2019", args...))
			t.Logf("without hbf, nmap -sU learned %d of 20 ports; the host sent %d unreachables",
				len(without), unreachables(t, lab.Host)-sent)
			if len(without) != 20 {
				t.Fatalf("without hbf nmap -sU learned %d ports, want all 20 (ICMP limits not lifted?)", len(without))
			}

			d := startDaemon(t, lab)
			sent = unreachables(t, lab.Host)
			with := learned(nmap(t, scanner, host, "2000-2019", args...))
			told := unreachables(t, lab.Host) - sent
			t.Logf("with hbf, nmap -sU learned %d of 20 ports %v; the host sent %d unreachables", len(with), with, told)
			if len(with) > maxPorts || told > maxPorts {
				t.Errorf("with hbf nmap -sU learned %d ports %v, the host told %d, want at most %d", len(with), with, told, maxPorts)
			}
			d.waitLine(line(`Port scan detected: %s -> %s on ports `+strings.Repeat(`\d+/udp,`, maxPorts)+`\d+/udp`, src, host))
			d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, src))
			if st := d.status(); st.Counters["udp_scans_detected"] != 1 || st.Counters["udp_attempts"] < maxPorts+1 {
				t.Errorf("status counters %v: want one UDP scan, %d attempts or more", st.Counters, maxPorts+1)
			}
		})
	}
}

// TestMasscanUDPLearnsAtMostN: masscan -pU at 10,000 packets/s.
func TestMasscanUDPLearnsAtMostN(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "masscan")
	lab := newLab(t, netlab.Options{Peers: []string{"before", "scanner"}})
	liftICMPLimits(t, lab.Host)
	host := lab.Host.Addr4
	masscan := func(ns *netlab.NS) uint64 {
		sent := unreachables(t, lab.Host)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := ns.Run(ctx, "masscan", "--adapter", netlab.Iface, "--router-ip", host.String(),
			"-pU:0-1000", "--rate", "10000", "--wait", "1", host.String()); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return unreachables(t, lab.Host) - sent
	}
	without := masscan(lab.Peers["before"])
	d := startDaemon(t, lab)
	with := masscan(lab.Peers["scanner"])
	t.Logf("masscan -pU:0-1000 at 10,000/s: the host told %d closed ports without hbf, %d with it", without, with)
	if without < 1000 || with > maxPorts {
		t.Errorf("masscan learned %d ports without hbf (want 1000 or more), %d with it (want at most %d)", without, with, maxPorts)
	}
	d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, lab.Peers["scanner"].Addr4))
}

// udpServer answers every datagram on port of ns with its payload, after
// delay.
func udpServer(t *testing.T, ns *netlab.NS, addr string, delay time.Duration) {
	t.Helper()
	var c net.PacketConn
	if err := ns.Do(func() (err error) { c, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			msg := append([]byte(nil), buf[:n]...)
			time.AfterFunc(delay, func() { c.WriteTo(msg, from) })
		}
	}()
}

// The host's own queries, from 200 ephemeral ports, get all 200 answers;
// late answers from port 53 to ports whose sockets are gone do not count;
// the server answering is never blocked.
func TestHostQueriesAndLateAnswers(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"resolver", "slow"}})
	resolver, slow := lab.Peers["resolver"], lab.Peers["slow"]
	udpServer(t, resolver, ":53", 0)
	udpServer(t, slow, ":53", 300*time.Millisecond)
	d := startDaemon(t, lab)

	answered := 0
	for i := range 200 {
		var c net.Conn
		err := lab.Host.Do(func() (err error) {
			c, err = net.Dial("udp", netip.AddrPortFrom(resolver.Addr4, 53).String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "query %d", i)
		buf := make([]byte, 64)
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == fmt.Sprintf("query %d", i) {
			answered++
		}
		c.Close()
	}
	if answered != 200 {
		t.Errorf("%d of the host's 200 queries answered", answered)
	}

	// The slow server answers after the host gave up: 50 answers to closed
	// ephemeral ports.
	for i := range 50 {
		var c net.Conn
		err := lab.Host.Do(func() (err error) {
			c, err = net.Dial("udp", netip.AddrPortFrom(slow.Addr4, 53).String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "late %d", i)
		c.Close()
	}
	time.Sleep(time.Second) // the answers' delay, and more
	if st := d.status(); st.Counters["udp_attempts"] != 0 || st.Counters["scans_detected"] != 0 {
		t.Errorf("status counters %v: the host's answers counted", st.Counters)
	}
	if blocks := d.listJSON(); len(blocks) != 0 {
		t.Errorf("blocks %+v, want none", blocks)
	}
}

// A UDP port published by DNAT to a container-like namespace is open, not
// closed: a client using five published ports is no scanner, and hbf
// status shows them.
func TestDNATPublishedUDPPorts(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "nft")
	lab := newLab(t, netlab.Options{Peers: []string{"container", "client"}})
	container, client := lab.Peers["container"], lab.Peers["client"]
	udpServer(t, container, ":7000", 0)
	ctx := context.Background()
	if out, err := lab.Host.Run(ctx, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ruleset := fmt.Sprintf(`table ip published {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		udp dport 7001-7005 dnat to %[1]s:7000
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr %[1]s masquerade
	}
}
`, container.Addr4)
	cmd := lab.Host.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	d := startDaemon(t, lab)
	if got := d.status().Settings["served_ports"]; got != "7001-7005/udp" {
		t.Errorf("status shows served ports %q, want 7001-7005/udp", got)
	}
	for round := range 3 {
		for port := 7001; port <= 7005; port++ {
			var c net.Conn
			err := client.Do(func() (err error) {
				c, err = net.Dial("udp", netip.AddrPortFrom(lab.Host.Addr4, uint16(port)).String())
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprintf(c, "hello %d", port)
			buf := make([]byte, 64)
			if _, err := c.Read(buf); err != nil {
				t.Errorf("round %d: no answer through published port %d: %v", round, port, err)
			}
			c.Close()
		}
	}
	if st := d.status(); st.Counters["udp_attempts"] != 0 || st.Counters["scans_detected"] != 0 {
		t.Errorf("status counters %v: published ports counted", st.Counters)
	}

	// A port published while hbf runs is followed.
	cmd = lab.Host.Command(ctx, "nft", "add", "rule", "ip", "published", "prerouting", "udp", "dport", "7010",
		"dnat", "to", container.Addr4.String()+":7000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.status().Settings["served_ports"] != "7001-7005/udp,7010/udp" {
		if time.Now().After(deadline) {
			t.Fatalf("status shows served ports %q 5 s after a new rule", d.status().Settings["served_ports"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// With --count-ports closed a client of six open services in a second is
// no scanner, and nmap -sS over 20 ports (3 open) still is: it learns at
// most N closed ports.
func TestCountClosedPorts(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"prometheus", "scanner"}})
	exporters := []int{9100, 9187, 9121, 9113, 8080, 9256}
	serveHTTP(t, lab.Host, exporters...)
	d := startDaemon(t, lab, "--count-ports", "closed")
	prometheus, scanner := lab.Peers["prometheus"], lab.Peers["scanner"]
	for _, port := range exporters {
		if got := dialOutcome(prometheus, hostPort(lab.Host.Addr4, port), 2*time.Second); got != "open" {
			t.Errorf("scrape of port %d: %s", port, got)
		}
	}
	if blocks := d.listJSON(); len(blocks) != 0 {
		t.Fatalf("a client of six open ports was blocked: %+v", blocks)
	}
	states := nmap(t, scanner, lab.Host.Addr4, "9100,9187,9121,2000-2016", "-sS", "-T5", "--max-retries", "1")
	var closed []int
	for port, s := range states {
		if s == "closed" {
			closed = append(closed, port)
		}
	}
	t.Logf("nmap -sS over 20 ports (3 open) learned %v, %d of them closed", learned(states), len(closed))
	if len(closed) > maxPorts {
		t.Errorf("nmap learned %d closed ports %v, want at most %d", len(closed), closed, maxPorts)
	}
	d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, scanner.Addr4))
}

// With --udp-scans report the nmap -sU scan is reported, and nothing is
// blocked.
func TestUDPScansReportOnly(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"scanner"}})
	liftICMPLimits(t, lab.Host)
	d := startDaemon(t, lab, "--udp-scans", "report")
	scanner := lab.Peers["scanner"]
	got := learned(nmap(t, scanner, lab.Host.Addr4, "2000-2019", "-sU", "-T5", "--max-retries", "1"))
	if len(got) != 20 {
		t.Errorf("nmap -sU learned %d ports with --udp-scans report, want all 20", len(got))
	}
	d.waitLine(line(`Port scan detected: %s -> %s on ports [0-9/udp,]+ \(UDP scans are reported only: not blocked\)`,
		scanner.Addr4, lab.Host.Addr4))
	if blocks := d.listJSON(); len(blocks) != 0 {
		t.Errorf("blocks %+v with --udp-scans report", blocks)
	}
}
