package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hbf-firewall/hbf/internal/limit"
	"github.com/hbf-firewall/hbf/internal/ports"
)

// The limits' lab: one namespace whose loopback holds the host's address
// and its clients', so that a client's connection completes there and the
// tracer counts it.
const (
	limitHost4 = "192.0.2.1"
	limitHost6 = "2001:db8::1"
)

var limitClients = []string{"192.0.2.70", "192.0.2.71", "192.0.2.72", "192.0.2.73",
	"2001:db8:1::70", "2001:db8:1::71"}

// newLimitDP is a program whose limits count the connections of a
// namespace of its own, with a listener on each port of ls.
func newLimitDP(t *testing.T, s Settings, ls ...string) *testDP {
	t.Helper()
	d := newLoopbackDP(t, s, append([]string{limitHost4, limitHost6}, limitClients...)...)
	if err := d.SetLocalAddrs([]netip.Addr{netip.MustParseAddr(limitHost4), netip.MustParseAddr(limitHost6)}); err != nil {
		t.Fatal(err)
	}
	parsed, err := limit.ParseList(ls)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetLimits(parsed); err != nil {
		t.Fatal(err)
	}
	for _, l := range parsed {
		if l.Port.Proto == ports.TCP {
			d.ns.acceptTCP(t, fmt.Sprintf("[::]:%d", l.Port.Num))
		}
	}
	return d
}

// newLoopbackDP is a program whose limits count the connections of a
// namespace of its own, whose loopback is up and holds addrs.
func newLoopbackDP(t testing.TB, s Settings, addrs ...string) *testDP {
	t.Helper()
	d := newTestDPWith(t, s, Options{firstAttemptSlots: testFirstAttemptSlots})
	d.ns = newNetns(t)
	err := d.ns.do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		for _, a := range addrs {
			ip := netip.MustParseAddr(a)
			if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: netipx(netip.PrefixFrom(ip, ip.BitLen()))}); err != nil {
				return fmt.Errorf("add %s: %w", a, err)
			}
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		d.netns = uint32(st.Ino)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetSettings(s); err != nil { // with the namespace's inode
		t.Fatal(err)
	}
	return d
}

func netipx(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// acceptTCP listens on addr in the namespace, accepting and closing every
// connection.
func (n *nsThread) acceptTCP(t testing.TB, addr string) {
	t.Helper()
	var l net.Listener
	if err := n.do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// connect completes a connection from the client's address to the host's
// port, in the namespace.
func (d *testDP) connect(client string, port uint16) {
	d.t.Helper()
	fd := d.socket(client)
	defer unix.Close(fd)
	if err := unix.Connect(fd, hostSockaddr(client, port)); err != nil {
		d.t.Fatalf("connect from %s to port %d: %v", client, port, err)
	}
}

// socket is a TCP socket of the namespace bound to the client's address.
func (d *testDP) socket(client string) int {
	d.t.Helper()
	a := netip.MustParseAddr(client)
	var fd int
	err := d.ns.do(func() (err error) {
		if a.Is4() {
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				err = unix.Bind(fd, &unix.SockaddrInet4{Addr: a.As4()})
			}
		} else {
			fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				err = unix.Bind(fd, &unix.SockaddrInet6{Addr: a.As16()})
			}
		}
		return err
	})
	if err != nil {
		d.t.Fatalf("socket of %s: %v", client, err)
	}
	return fd
}

func hostSockaddr(client string, port uint16) unix.Sockaddr {
	if netip.MustParseAddr(client).Is4() {
		return &unix.SockaddrInet4{Addr: netip.MustParseAddr(limitHost4).As4(), Port: int(port)}
	}
	return &unix.SockaddrInet6{Addr: netip.MustParseAddr(limitHost6).As16(), Port: int(port)}
}

func (d *testDP) limitEvents() []*LimitExceeded {
	d.t.Helper()
	var out []*LimitExceeded
	for _, ev := range d.drain() {
		if l, ok := ev.(*LimitExceeded); ok {
			out = append(out, l)
		}
	}
	return out
}

func (d *testDP) limitStats(p ports.Port) LimitStats {
	d.t.Helper()
	st, err := d.LimitStats()
	if err != nil {
		d.t.Fatal(err)
	}
	return st[p]
}

// blockOf is the kernel's block of p, and whether there is one.
func (d *testDP) blockOf(p netip.Prefix) (Rule, bool) {
	d.t.Helper()
	var found Rule
	ok := false
	if err := d.EachBlock(func(r Rule) error {
		if r.Prefix == p {
			found, ok = r, true
		}
		return nil
	}); err != nil {
		d.t.Fatal(err)
	}
	return found, ok
}

var ssh2222 = ports.Port{Num: 2222}

func TestConnectionLimitBlocksThePastConnection(t *testing.T) {
	d := newLimitDP(t, defaults, "2222/tcp=3/60s")
	for range 3 {
		d.connect("192.0.2.70", 2222)
	}
	if evs := d.limitEvents(); len(evs) != 0 {
		t.Fatalf("3 connections under a limit of 3 were reported: %+v", evs[0])
	}
	if _, ok := d.blockOf(mustPrefix("192.0.2.70/32")); ok {
		t.Fatal("3 connections under a limit of 3 blocked the source")
	}
	d.connect("192.0.2.70", 2222)
	evs := d.limitEvents()
	if len(evs) != 1 {
		t.Fatalf("the 4th connection made %d limit events, want 1", len(evs))
	}
	ev := evs[0]
	if !ev.Blocked || ev.Source != mustPrefix("192.0.2.70/32") || ev.Port != ssh2222 || ev.Count != 3 ||
		ev.Window != time.Minute || ev.Dst != netip.MustParseAddr(limitHost4) {
		t.Fatalf("limit event %+v, want 192.0.2.70 blocked over 2222/tcp=3/60s", ev)
	}
	if got := ev.Expires.Sub(ev.Time); got != time.Hour {
		t.Errorf("the block lasts %s, want the block duration, 1h", got)
	}
	r, ok := d.blockOf(mustPrefix("192.0.2.70/32"))
	if !ok || r.Origin != OriginLimit {
		t.Fatalf("kernel block of 192.0.2.70: %+v (found %v), want one of origin limit", r, ok)
	}
	if st := d.limitStats(ssh2222); st != (LimitStats{Counted: 4, Exceeded: 1, Blocked: 1}) {
		t.Errorf("limit stats %+v, want 4 counted, 1 over, 1 blocked", st)
	}
	if c := d.counters(); c.LimitBlocks != 1 || c.BlocksAdded != 0 {
		t.Errorf("counters: %d limit blocks and %d scan blocks, want 1 and 0", c.LimitBlocks, c.BlocksAdded)
	}
	// The XDP program drops the source's next packet.
	if v := d.run(tcpSYN("192.0.2.70", limitHost4, 40000, 2222)); v != xdpDrop {
		t.Errorf("a SYN of the blocked source: %s, want DROP", verdict(v))
	}
}

func TestConnectionLimitWindowEdges(t *testing.T) {
	d := newLimitDP(t, defaults, "2222/tcp=3/60s")
	// Within the window by a millisecond: over.
	for range 3 {
		d.connect("192.0.2.70", 2222)
	}
	d.advance(time.Minute - 50*time.Millisecond)
	d.connect("192.0.2.70", 2222)
	if evs := d.limitEvents(); len(evs) != 1 || !evs[0].Blocked {
		t.Fatalf("a 4th connection just inside the window: %d events, want a block", len(evs))
	}
	// The window past: the oldest connection no longer counts, and a
	// source keeps its full allowance at each window.
	for range 3 {
		d.connect("192.0.2.71", 2222)
	}
	d.advance(time.Minute)
	for range 3 {
		d.connect("192.0.2.71", 2222)
	}
	if evs := d.limitEvents(); len(evs) != 0 {
		t.Fatalf("3 connections a window after 3 others were reported: %+v", evs[0])
	}
	d.connect("192.0.2.71", 2222)
	if evs := d.limitEvents(); len(evs) != 1 || evs[0].Source != mustPrefix("192.0.2.71/32") {
		t.Fatalf("the 4th connection of the second window: %v, want 192.0.2.71 over", evs)
	}
}

// Connections of one source completing on every CPU at once: exactly the
// count are under the limit, whatever the interleaving.
func TestConnectionLimitAcrossCPUs(t *testing.T) {
	d := newLimitDP(t, defaults, "2222/tcp=3/60s")
	const n = 16
	fds := make([]int, n)
	for i := range fds {
		fds[i] = d.socket("192.0.2.72")
		defer unix.Close(fds[i])
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, fd := range fds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer onCPU(i % runtime.NumCPU())()
			<-start
			if err := unix.Connect(fd, hostSockaddr("192.0.2.72", 2222)); err != nil {
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("connect: %v", err)
	}
	st := d.limitStats(ssh2222)
	if st.Counted != n || st.Exceeded != n-3 {
		t.Fatalf("%d concurrent connections under a limit of 3: %d counted, %d over; want %d and %d",
			n, st.Counted, st.Exceeded, n, n-3)
	}
}

// An off-link IPv6 source is counted by its /64, as scans are.
func TestConnectionLimitCountsIPv6ByPrefix(t *testing.T) {
	d := newLimitDP(t, defaults, "2222/tcp=3/60s")
	d.connect("2001:db8:1::70", 2222)
	d.connect("2001:db8:1::71", 2222)
	d.connect("2001:db8:1::70", 2222)
	if evs := d.limitEvents(); len(evs) != 0 {
		t.Fatalf("3 connections from one /64 were reported: %+v", evs[0])
	}
	d.connect("2001:db8:1::71", 2222)
	evs := d.limitEvents()
	if len(evs) != 1 || !evs[0].Blocked || evs[0].Source != mustPrefix("2001:db8:1::/64") ||
		evs[0].Src.Addr() != netip.MustParseAddr("2001:db8:1::71") {
		t.Fatalf("the /64's 4th connection: %v, want 2001:db8:1::/64 blocked", evs)
	}
	if _, ok := d.blockOf(mustPrefix("2001:db8:1::/64")); !ok {
		t.Fatal("no kernel block of 2001:db8:1::/64")
	}
}

func TestConnectionLimitSparesProtectedSources(t *testing.T) {
	d := newLimitDP(t, defaults, "2222/tcp=3/60s")
	d.mustAllow("192.0.2.73/32")
	for range 6 {
		d.connect("192.0.2.73", 2222)
	}
	evs := d.limitEvents()
	if len(evs) != 1 || !evs[0].Allowlisted || evs[0].Blocked {
		t.Fatalf("an allowlisted source over the limit: %v, want one allowlisted report", evs)
	}
	if _, ok := d.blockOf(mustPrefix("192.0.2.73/32")); ok {
		t.Fatal("an allowlisted source was blocked")
	}
	if st := d.limitStats(ssh2222); st.Exceeded != 3 || st.Blocked != 0 {
		t.Errorf("limit stats %+v, want 3 over, none blocked", st)
	}
}

func TestConnectionLimitInMonitorMode(t *testing.T) {
	s := defaults
	s.Monitor = true
	d := newLimitDP(t, s, "2222/tcp=3/60s")
	for range 5 {
		d.connect("192.0.2.70", 2222)
	}
	evs := d.limitEvents()
	if len(evs) != 1 || !evs[0].WouldBlock || evs[0].Blocked {
		t.Fatalf("monitor mode: %v, want one would-block report", evs)
	}
	if _, ok := d.blockOf(mustPrefix("192.0.2.70/32")); ok {
		t.Fatal("monitor mode blocked a source")
	}
}

// A SYN needs no answer: any number of them, forged with a client's
// address, neither count nor leave state, and cannot throttle it.
func TestForgedSYNsNeverCount(t *testing.T) {
	d := newLimitDP(t, defaults, "2222/tcp=3/60s", "2223/tcp=3/60s:drop")
	for i := range 200 {
		for _, port := range []uint16{2222, 2223} {
			if v := d.run(tcpSYN("192.0.2.70", limitHost4, uint16(1024+i), port)); v != xdpPass {
				t.Fatalf("forged SYN %d to %d: %s, want PASS", i, port, verdict(v))
			}
		}
	}
	var key hbfLimitKey
	var val []byte
	if it := d.objs.ConnLogs.Iterate(); it.Next(&key, &val) {
		t.Fatalf("forged SYNs left a connection log: %+v", key)
	}
	if evs := d.limitEvents(); len(evs) != 0 {
		t.Fatalf("forged SYNs were reported: %+v", evs[0])
	}
	// The client's own connections are untouched by them.
	for range 3 {
		d.connect("192.0.2.70", 2222)
	}
	if evs := d.limitEvents(); len(evs) != 0 {
		t.Fatalf("3 real connections after forged SYNs were reported: %+v", evs[0])
	}
}

func TestDropLimitThrottlesWithoutBlocking(t *testing.T) {
	d := newLimitDP(t, defaults, "2223/tcp=2/60s:drop")
	port := ports.Port{Num: 2223}
	d.connect("192.0.2.72", 2223)
	d.connect("192.0.2.72", 2223)
	for i := range 3 {
		if v := d.run(tcpSYN("192.0.2.72", limitHost4, uint16(50000+i), 2223)); v != xdpDrop {
			t.Fatalf("SYN %d past a full log: %s, want DROP", i, verdict(v))
		}
	}
	evs := d.limitEvents()
	if len(evs) != 1 || !evs[0].Throttled || evs[0].Blocked || evs[0].Port != port {
		t.Fatalf("throttled SYNs: %v, want one throttled report", evs)
	}
	if _, ok := d.blockOf(mustPrefix("192.0.2.72/32")); ok {
		t.Fatal(":drop blocked the source")
	}
	if v := d.run(tcpSYN("192.0.2.73", limitHost4, 50000, 2223)); v != xdpPass {
		t.Errorf("another source's SYN: %s, want PASS", verdict(v))
	}
	if v := d.run(tcpSYN("192.0.2.72", limitHost4, 50000, 22)); v != xdpPass {
		t.Errorf("the source's SYN to another port: %s, want PASS", verdict(v))
	}
	d.advance(time.Minute)
	if v := d.run(tcpSYN("192.0.2.72", limitHost4, 50010, 2223)); v != xdpPass {
		t.Errorf("a SYN once the window passed: %s, want PASS", verdict(v))
	}
	if st := d.limitStats(port); st.Dropped != 3 || st.Blocked != 0 {
		t.Errorf("limit stats %+v, want 3 dropped, none blocked", st)
	}
	if c := d.counters(); c.Dropped[DropLimit] != 3 {
		t.Errorf("%d drops by reason limit, want 3", c.Dropped[DropLimit])
	}
}

func TestUDPLimitThrottles(t *testing.T) { forEachHook(t, testUDPLimitThrottles) }

func testUDPLimitThrottles(t *testing.T, h Hook) {
	d := newTestDPWith(t, defaults, Options{firstAttemptSlots: testFirstAttemptSlots, Hook: h})
	d.ns = newNetns(t)
	d.ns.listenUDP(t, "udp", "[::]:5060")
	if err := d.SetLimits([]limit.Limit{{Port: ports.Port{Num: 5060, Proto: ports.UDP}, Count: 3, Window: 10 * time.Second, Action: limit.Drop}}); err != nil {
		t.Fatal(err)
	}
	d.mustAllow("192.0.2.91/32")
	send := func(src string, i int) uint32 {
		return d.run(udpDatagram(src, limitHost4, uint16(5060+i), 5060))
	}
	for i := range 3 {
		if v := send("192.0.2.90", i); v != xdpPass {
			t.Fatalf("datagram %d of 3: %s, want PASS", i+1, verdict(v))
		}
	}
	for i := range 3 {
		if v := send("192.0.2.90", 3+i); v != xdpDrop {
			t.Fatalf("datagram %d over 3/10s: %s, want DROP", 4+i, verdict(v))
		}
	}
	for i := range 5 {
		if v := send("192.0.2.91", i); v != xdpPass {
			t.Fatalf("allowlisted datagram %d: %s, want PASS", i+1, verdict(v))
		}
	}
	evs := d.limitEvents()
	if len(evs) != 2 || !evs[0].Throttled || !evs[1].Allowlisted {
		t.Fatalf("UDP limit events %v, want 192.0.2.90 throttled, 192.0.2.91 reported as allowlisted", evs)
	}
	if _, ok := d.blockOf(mustPrefix("192.0.2.90/32")); ok {
		t.Fatal("a UDP limit blocked a source")
	}
	d.advance(10 * time.Second)
	if v := send("192.0.2.90", 10); v != xdpPass {
		t.Errorf("a datagram once the window passed: %s, want PASS", verdict(v))
	}
}

func TestSetLimitsKeepsWhatALimitDid(t *testing.T) {
	d := newLimitDP(t, defaults, "2222/tcp=3/60s")
	for range 4 {
		d.connect("192.0.2.70", 2222)
	}
	// A new window: the counts stay, the logs start afresh.
	if err := d.SetLimits([]limit.Limit{{Port: ssh2222, Count: 2, Window: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if st := d.limitStats(ssh2222); st.Counted != 4 || st.Exceeded != 1 {
		t.Fatalf("stats after a change: %+v, want 4 counted and 1 over kept", st)
	}
	d.connect("192.0.2.71", 2222)
	d.connect("192.0.2.71", 2222)
	d.connect("192.0.2.71", 2222)
	if evs := d.limitEvents(); len(evs) != 2 || evs[1].Count != 2 {
		t.Fatalf("events %v: want the 3rd connection over the new limit of 2", evs)
	}
	// No TCP limit: the tracer stops, and counts nothing.
	if err := d.SetLimits(nil); err != nil {
		t.Fatal(err)
	}
	if d.tracer != nil {
		t.Fatal("the tracer runs with no TCP limit")
	}
	if st, _ := d.LimitStats(); len(st) != 0 {
		t.Fatalf("limits after removing them all: %v", st)
	}
}

// unthrottledLimits puts limits on the ports the parser's table and the
// fuzzer send to, that never throttle (see underLimit): every SYN and
// datagram there takes the limit's path, which reads the parsed ports
// and source, without a verdict the oracle does not know.
func (d *testDP) unthrottledLimits(t testing.TB) {
	t.Helper()
	ls := []limit.Limit{{Port: ports.Port{Num: dstPort}, Count: 1, Window: time.Second, Action: limit.Drop},
		{Port: ports.Port{Num: dstPort, Proto: ports.UDP}, Count: 1, Window: time.Second, Action: limit.Drop},
		{Port: ports.Port{Num: 161, Proto: ports.UDP}, Count: 1, Window: time.Second, Action: limit.Drop}}
	if err := d.SetLimits(ls); err != nil {
		t.Fatal(err)
	}
	underLimit(t, d.Dataplane)
}

func TestLimitCountBoundIsTheProgramsOwn(t *testing.T) {
	if limit.MaxCount != MaxLimitCount {
		t.Fatalf("limit.MaxCount is %d, the program keeps %d connections a source", limit.MaxCount, MaxLimitCount)
	}
}

// BenchmarkHandshake times a TCP handshake completed over loopback in a
// namespace, the path the connection tracer runs on: with no TCP limit
// (the tracer detached, the baseline), to a port with a limit, and to
// another port while a limit is set. Interleaved rounds, medians.
func BenchmarkHandshake(b *testing.B) {
	d := newLoopbackDP(b, defaults)
	d.ns.acceptTCP(b, "127.0.0.1:7000")
	d.ns.acceptTCP(b, "127.0.0.1:7001")
	limited := []limit.Limit{{Port: ports.Port{Num: 7000}, Count: limit.MaxCount, Window: time.Minute}}
	// A handshake takes tens of µs: rounds of a fixed count, whatever
	// -benchtime asks of the per-packet rows.
	const perRound = 2000
	handshakes := func(port int) time.Duration {
		var took time.Duration
		err := d.ns.do(func() error {
			start := time.Now()
			for range perRound {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				// A reset at close: no TIME_WAIT left to run out of ports.
				unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
				err = unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port})
				unix.Close(fd)
				if err != nil {
					return err
				}
			}
			took = time.Since(start) / perRound
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		return took
	}
	var none, limitedPort, otherPort []time.Duration
	b.ResetTimer()
	for range 5 {
		if err := d.SetLimits(nil); err != nil {
			b.Fatal(err)
		}
		none = append(none, handshakes(7001))
		if err := d.SetLimits(limited); err != nil {
			b.Fatal(err)
		}
		underLimit(b, d.Dataplane)
		limitedPort = append(limitedPort, handshakes(7000))
		otherPort = append(otherPort, handshakes(7001))
	}
	if st := d.limitStats(ports.Port{Num: 7000}); st.Counted == 0 || st.Exceeded != 0 {
		b.Fatalf("limit stats %+v: want handshakes counted, none over", st)
	}
	base := median(none)
	b.ReportMetric(float64(base.Nanoseconds()), "ns-no-limit")
	b.ReportMetric(float64(median(limitedPort).Nanoseconds()), "ns-limited-port")
	b.ReportMetric(float64(median(otherPort).Nanoseconds()), "ns-other-port")
	b.ReportMetric(float64(median(limitedPort))/float64(base), "x-limited")
	b.ReportMetric(float64(median(otherPort))/float64(base), "x-other")
}

// A limit counts the connections of the daemon's own namespace only: one
// completed in another (a container's, reached by DNAT) is not counted.
func TestConnectionLimitCountsItsNamespaceOnly(t *testing.T) {
	d := newLimitDP(t, defaults, "2222/tcp=1/60s")
	other := newLoopbackDP(t, defaults, limitHost4, "192.0.2.70")
	other.ns.acceptTCP(t, "[::]:2222")
	for range 3 {
		other.connect("192.0.2.70", 2222)
	}
	if st := d.limitStats(ssh2222); st.Counted != 0 {
		t.Fatalf("connections in another namespace were counted: %+v", st)
	}
	d.connect("192.0.2.70", 2222)
	if st := d.limitStats(ssh2222); st.Counted != 1 {
		t.Fatalf("a connection in the limit's namespace: %+v, want 1 counted", st)
	}
}
