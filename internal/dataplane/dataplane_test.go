package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

const (
	xdpAborted = 0
	xdpDrop    = 1
	xdpPass    = 2

	tcActUnspec = -1 // TCX_NEXT: the next program decides
	tcActShot   = 2
)

// hooks are the builds of the program; the tests of its verdicts hold
// each to the same expectations.
var hooks = []Hook{HookXDP, HookTCX}

// xdpVerdict is the XDP verdict that ret, which the build for h returned,
// stands for; a TC return code that stands for none is an error.
func (h Hook) xdpVerdict(ret uint32) (uint32, error) {
	if h == HookXDP {
		return ret, nil
	}
	switch int32(ret) {
	case tcActShot:
		return xdpDrop, nil
	case tcActUnspec:
		return xdpPass, nil
	}
	return xdpAborted, fmt.Errorf("the TC build returned %d, neither TC_ACT_SHOT nor TC_ACT_UNSPEC", int32(ret))
}

// forEachHook runs test against each build of the program.
func forEachHook(t *testing.T, test func(t *testing.T, h Hook)) {
	for _, h := range hooks {
		t.Run(string(h), func(t *testing.T) { test(t, h) })
	}
}

var defaults = Settings{MaxPorts: 3, Window: time.Minute, BlockDuration: time.Hour,
	MaxBlocksPerMinute: 30, IPv6ScanPrefix: 64}

var noExpiry time.Time

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// portsOf is a scan's port numbers; the tests that call it send TCP only.
func portsOf(s *Scan) []uint16 {
	var out []uint16
	for _, p := range s.Ports {
		out = append(out, p.Port.Num)
	}
	return out
}

type testDP struct {
	*Dataplane
	t      testing.TB
	events *EventReader
	// ns, when set, is the namespace the program runs in: its sockets are
	// the ones the program's lookups find.
	ns *nsThread
}

// testFirstAttemptSlots keeps the tracker's first tier small enough to empty
// between cases; tests of the tier itself use the program's full size.
const testFirstAttemptSlots = 1024

func newTestDP(t testing.TB, s Settings) *testDP {
	t.Helper()
	return newTestDPWith(t, s, Options{firstAttemptSlots: testFirstAttemptSlots})
}

func newTestDPWith(t testing.TB, s Settings, opts Options) *testDP {
	t.Helper()
	testenv.RequirePrivileged(t)
	dp, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	if err := dp.SetSettings(s); err != nil {
		t.Fatal(err)
	}
	ev, err := dp.Events()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ev.Close() })
	return &testDP{Dataplane: dp, t: t, events: ev}
}

// runBytes runs the program on a frame and returns its verdict, as XDP's
// whichever build it is.
func (d *testDP) runBytes(b []byte) uint32 {
	d.t.Helper()
	var v uint32
	var err error
	if d.ns != nil {
		err = d.ns.do(func() error { v, err = d.runFrame(b); return err })
	} else {
		v, err = d.runFrame(b)
	}
	if err != nil {
		d.t.Fatal(err)
	}
	return v
}

// errNoSkb: BPF_PROG_TEST_RUN builds no skb of a frame whose IPv4 or IPv6
// header is cut short (EINVAL), so the TC build cannot be run on it.
var errNoSkb = errors.New("BPF_PROG_TEST_RUN builds no skb of a frame whose IP header is cut short")

func (d *Dataplane) runFrame(b []byte) (uint32, error) {
	ret, err := d.objs.Program.Run(&ebpf.RunOptions{Data: b})
	if d.hook == HookTCX && errors.Is(err, unix.EINVAL) {
		return xdpAborted, errNoSkb
	}
	if err != nil {
		return xdpAborted, fmt.Errorf("run program on %d bytes: %w", len(b), err)
	}
	return d.hook.xdpVerdict(ret)
}

func (d *testDP) run(f frame) uint32 {
	d.t.Helper()
	return d.runBytes(f.bytes())
}

// drain returns the events the runs so far produced: the program submits
// them before Run returns.
func (d *testDP) drain() []Event {
	d.t.Helper()
	var out []Event
	for {
		ev, err := d.events.Poll()
		if err != nil {
			d.t.Fatal(err)
		}
		if ev == nil {
			return out
		}
		out = append(out, ev)
	}
}

func (d *testDP) counters() Counters {
	d.t.Helper()
	c, err := d.Counters()
	if err != nil {
		d.t.Fatal(err)
	}
	return c
}

func (d *testDP) mustBlock(prefix string, expires time.Time) {
	d.t.Helper()
	if err := d.Block(netip.MustParsePrefix(prefix), expires); err != nil {
		d.t.Fatal(err)
	}
}

func (d *testDP) mustAllow(prefix string) {
	d.t.Helper()
	if err := d.Allow(netip.MustParsePrefix(prefix), time.Time{}); err != nil {
		d.t.Fatal(err)
	}
}

// advance moves the program's clock forward by dt, as if that much time
// had passed: windows and expiries run out without a sleep.
func (d *testDP) advance(dt time.Duration) {
	d.t.Helper()
	off := d.clock.offset.Load() + uint64(dt)
	if err := d.objs.HbfClockOffset.Set(off); err != nil {
		d.t.Fatalf("move the program's clock: %v", err)
	}
	d.clock.offset.Store(off)
}

func verdict(v uint32) string {
	return map[uint32]string{xdpAborted: "ABORTED", xdpDrop: "DROP", xdpPass: "PASS"}[v]
}

func expectVerdict(t *testing.T, got, want uint32, what string) {
	t.Helper()
	if got != want {
		t.Errorf("%s: verdict %s, want %s", what, verdict(got), verdict(want))
	}
}

func TestNewConnectionIsReported(t *testing.T) {
	for _, tc := range []struct{ src, dst string }{
		{"192.0.2.56", "203.0.113.5"},
		{"2001:db8::56", "2001:db8::1"},
	} {
		t.Run(tc.src, func(t *testing.T) {
			d := newTestDP(t, defaults)
			expectVerdict(t, d.run(tcpSYN(tc.src, tc.dst, 5973, 80)), xdpPass, "SYN")

			events := d.drain()
			if len(events) != 1 {
				t.Fatalf("got %d events, want 1: %v", len(events), events)
			}
			c, ok := events[0].(*Connection)
			if !ok {
				t.Fatalf("got %T, want *Connection", events[0])
			}
			wantSrc := netip.AddrPortFrom(netip.MustParseAddr(tc.src), 5973)
			wantDst := netip.AddrPortFrom(netip.MustParseAddr(tc.dst), 80)
			if c.Src != wantSrc || c.Dst != wantDst {
				t.Errorf("connection %v -> %v, want %v -> %v", c.Src, c.Dst, wantSrc, wantDst)
			}
			// BPF_PROG_TEST_RUN hands XDP the loopback's receive queue.
			if c.Ifindex != 1 {
				t.Errorf("connection on interface %d, want the loopback's, 1", c.Ifindex)
			}
			if age := time.Since(c.Time); age < 0 || age > 5*time.Second {
				t.Errorf("event time %v is %v from now", c.Time, age)
			}
			if n := d.counters().NewConnections; n != 1 {
				t.Errorf("new connections counter %d, want 1", n)
			}
		})
	}
}

func TestSYNWithECNIsANewConnection(t *testing.T) {
	d := newTestDP(t, defaults)
	f := tcpSYN("192.0.2.56", "203.0.113.5", 40000, 443).with(func(f *frame) { f.flags = syn | ece | cwr })
	expectVerdict(t, d.run(f), xdpPass, "SYN+ECE+CWR")
	if n := len(d.drain()); n != 1 {
		t.Errorf("got %d events, want 1", n)
	}
}

func TestRetransmittedSYNIsReportedOnce(t *testing.T) {
	d := newTestDP(t, defaults)
	first := tcpSYN("192.0.2.56", "203.0.113.5", 40000, 22)
	for range 3 {
		expectVerdict(t, d.run(first), xdpPass, "retransmitted SYN")
	}
	// A new attempt to the same port from another source port is a new
	// connection, and still one port for the scan tally.
	for sport := uint16(40001); sport < 40010; sport++ {
		expectVerdict(t, d.run(tcpSYN("192.0.2.56", "203.0.113.5", sport, 22)), xdpPass, "new attempt")
	}
	var conns int
	for _, ev := range d.drain() {
		if _, ok := ev.(*Connection); !ok {
			t.Fatalf("unexpected event %#v", ev)
		}
		conns++
	}
	if conns != 10 {
		t.Errorf("got %d connection events, want 10 (1 + 9 new attempts)", conns)
	}
	if c := d.counters(); c.NewConnections != 10 || c.ScansDetected != 0 {
		t.Errorf("counters %+v, want 10 new connections and no scan", c)
	}
}

func TestNonSYNSegmentsPassUnreported(t *testing.T) {
	d := newTestDP(t, defaults)
	for i, flags := range []uint8{ack, syn | ack, rst, rst | ack, fin | ack, psh | ack, ack | urg} {
		// Many ports: none of these may count toward a scan.
		f := tcpSYN("192.0.2.56", "203.0.113.5", 40000, uint16(1000+i)).with(func(f *frame) { f.flags = flags })
		expectVerdict(t, d.run(f), xdpPass, fmt.Sprintf("flags %#x", flags))
	}
	if ev := d.drain(); len(ev) != 0 {
		t.Errorf("got events %v, want none", ev)
	}
	if c := d.counters(); c.NewConnections != 0 || c.ScansDetected != 0 {
		t.Errorf("counters %+v, want no connection, no scan", c)
	}
}

func TestStealthProbesAreDropped(t *testing.T) {
	probes := map[string]uint8{
		"NULL": 0, "FIN": fin, "XMAS": fin | psh | urg, "PSH": psh, "URG": urg,
		"FIN+PSH": fin | psh, "SYN+FIN": syn | fin, "SYN+RST": syn | rst,
		"SYN+FIN+ACK": syn | fin | ack, "SYN+RST+ACK": syn | rst | ack,
	}
	d := newTestDP(t, defaults)
	i := 0
	for name, flags := range probes {
		i++
		// One source each, so no source reaches the threshold.
		f := tcpSYN(fmt.Sprintf("198.51.100.%d", i), "203.0.113.5", 40000, 80).with(func(f *frame) { f.flags = flags })
		expectVerdict(t, d.run(f), xdpDrop, name)
	}
	if ev := d.drain(); len(ev) != 0 {
		t.Errorf("got events %v, want none", ev)
	}
	if c := d.counters(); c.Dropped[DropStealth] != uint64(len(probes)) || c.NewConnections != 0 {
		t.Errorf("counters %+v, want %d stealth drops and no connection", c, len(probes))
	}
}

func TestScanCrossingThresholdIsBlocked(t *testing.T) {
	for _, src := range []string{"192.0.2.66", "2001:db8::66"} {
		t.Run(src, func(t *testing.T) {
			dst := "203.0.113.5"
			if netip.MustParseAddr(src).Is6() {
				dst = "2001:db8::1"
			}
			d := newTestDP(t, defaults)
			for port := uint16(80); port < 83; port++ {
				expectVerdict(t, d.run(tcpSYN(src, dst, 50000, port)), xdpPass, fmt.Sprintf("SYN to port %d (within N)", port))
			}
			expectVerdict(t, d.run(tcpSYN(src, dst, 50000, 83)), xdpDrop, "SYN to the (N+1)th port")
			// Blocked now: every packet, not only SYNs.
			expectVerdict(t, d.run(tcpSYN(src, dst, 50000, 80).with(func(f *frame) { f.flags = ack })), xdpDrop, "ACK after block")
			expectVerdict(t, d.run(tcpSYN(src, dst, 50001, 80)), xdpDrop, "SYN to a known port after block")

			var conns int
			var scans []*Scan
			for _, ev := range d.drain() {
				switch ev := ev.(type) {
				case *Connection:
					conns++
				case *Scan:
					scans = append(scans, ev)
				}
			}
			if conns != 3 {
				t.Errorf("got %d connection events, want 3 (the dropped SYN is no connection)", conns)
			}
			if len(scans) != 1 {
				t.Fatalf("got %d scan events, want 1", len(scans))
			}
			s := scans[0]
			if s.Src != netip.MustParseAddr(src) || s.Dst != netip.MustParseAddr(dst) {
				t.Errorf("scan %v -> %v, want %v -> %v", s.Src, s.Dst, src, dst)
			}
			if got := portsOf(s); !slices.Equal(got, []uint16{80, 81, 82, 83}) {
				t.Errorf("scan ports %v, want [80 81 82 83]", got)
			}
			for _, p := range s.Ports {
				if d := s.Time.Sub(p.Seen); d < 0 || d > 5*time.Second {
					t.Errorf("port %d seen %v before the scan event", p.Port, d)
				}
			}
			if !s.Blocked || s.Allowlisted || s.BlockFailed {
				t.Errorf("scan flags blocked=%v allowlisted=%v failed=%v, want a block", s.Blocked, s.Allowlisted, s.BlockFailed)
			}
			if until := time.Until(s.Expires); until < 59*time.Minute || until > 61*time.Minute {
				t.Errorf("block expires in %v, want 1h", until)
			}

			blocks, err := d.Blocks()
			if err != nil {
				t.Fatal(err)
			}
			// An off-link IPv6 scanner is blocked with its /64.
			want := netip.PrefixFrom(netip.MustParseAddr(src), netip.MustParseAddr(src).BitLen())
			if want.Addr().Is6() {
				want = netip.PrefixFrom(want.Addr(), defaults.IPv6ScanPrefix).Masked()
			}
			if s.Source != want {
				t.Errorf("scan source %v, want %v", s.Source, want)
			}
			if len(blocks) != 1 || blocks[0].Prefix != want || blocks[0].Origin != OriginScan || blocks[0].Packets != 2 {
				t.Errorf("blocks %+v, want one scan block of %v with 2 packets dropped", blocks, want)
			}
			c := d.counters()
			if c.ScansDetected != 1 || c.BlocksAdded != 1 || c.Dropped[DropScan] != 1 || c.Dropped[DropBlocked] != 2 || c.NewConnections != 3 {
				t.Errorf("counters %+v", c)
			}
		})
	}
}

func TestPermanentScanBlock(t *testing.T) {
	s := defaults
	s.BlockDuration = 0
	d := newTestDP(t, s)
	for port := uint16(1); port <= 4; port++ {
		d.run(tcpSYN("192.0.2.66", "203.0.113.5", 50000, port))
	}
	blocks, err := d.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || !blocks[0].Expires.IsZero() {
		t.Errorf("blocks %+v, want one block without expiry", blocks)
	}
}

func TestStealthProbesCountTowardScan(t *testing.T) {
	d := newTestDP(t, defaults)
	for port := uint16(1); port <= 3; port++ {
		f := tcpSYN("192.0.2.66", "203.0.113.5", 50000, port).with(func(f *frame) { f.flags = fin | psh | urg })
		expectVerdict(t, d.run(f), xdpDrop, "XMAS probe")
	}
	if c := d.counters(); c.ScansDetected != 0 {
		t.Fatalf("scan after %d probes with N=3", 3)
	}
	f := tcpSYN("192.0.2.66", "203.0.113.5", 50000, 4).with(func(f *frame) { f.flags = fin })
	expectVerdict(t, d.run(f), xdpDrop, "4th probe")
	if c := d.counters(); c.ScansDetected != 1 || c.BlocksAdded != 1 || c.Dropped[DropStealth] != 4 {
		t.Errorf("counters %+v, want one scan, one block, 4 stealth drops", c)
	}
}

func TestPortsOutsideWindowDoNotCount(t *testing.T) {
	d := newTestDP(t, defaults)
	src, dst := "192.0.2.66", "203.0.113.5"
	for port := uint16(1); port <= 3; port++ {
		expectVerdict(t, d.run(tcpSYN(src, dst, 50000, port)), xdpPass, "early port")
	}
	d.advance(defaults.Window + time.Second) // ports 1-3 leave the window
	for port := uint16(4); port <= 6; port++ {
		expectVerdict(t, d.run(tcpSYN(src, dst, 50000, port)), xdpPass, fmt.Sprintf("port %d in a fresh window", port))
	}
	expectVerdict(t, d.run(tcpSYN(src, dst, 50000, 7)), xdpDrop, "4th port of the fresh window")
	var ports []uint16
	for _, ev := range d.drain() {
		if s, ok := ev.(*Scan); ok {
			ports = portsOf(s)
		}
	}
	if !slices.Equal(ports, []uint16{4, 5, 6, 7}) {
		t.Errorf("scan ports %v, want [4 5 6 7]", ports)
	}
}

func TestRecentlyUsedPortStaysInWindow(t *testing.T) {
	// A port the source keeps using is in the window however long ago it
	// was first seen.
	d := newTestDP(t, defaults)
	src, dst := "192.0.2.66", "203.0.113.5"
	d.run(tcpSYN(src, dst, 50000, 80))
	d.run(tcpSYN(src, dst, 50000, 81))
	d.advance(defaults.Window * 5 / 8)
	d.run(tcpSYN(src, dst, 50001, 80)) // refreshes 80
	d.advance(defaults.Window * 5 / 8) // 81 is out, 80 is in
	expectVerdict(t, d.run(tcpSYN(src, dst, 50000, 82)), xdpPass, "port 82")
	expectVerdict(t, d.run(tcpSYN(src, dst, 50000, 83)), xdpPass, "port 83: 80, 82, 83 in window")
	expectVerdict(t, d.run(tcpSYN(src, dst, 50000, 84)), xdpDrop, "port 84: 80, 82, 83, 84 in window")
}

func TestBlocks(t *testing.T) {
	d := newTestDP(t, defaults)
	past := time.Now().Add(-time.Second)
	d.mustBlock("192.0.2.7/32", time.Time{})
	d.mustBlock("198.51.100.0/24", time.Time{})
	d.mustBlock("2001:db8:1::7/128", time.Time{})
	d.mustBlock("2001:db8:2::/64", time.Time{})
	d.mustBlock("192.0.2.8/32", past)
	d.mustBlock("2001:db8:3::/48", past)
	// An expired /24 inside a live /16 must not hide the /16.
	d.mustBlock("203.0.0.0/16", time.Time{})
	d.mustBlock("203.0.113.0/24", past)

	for _, tc := range []struct {
		src  string
		want uint32
	}{
		{"192.0.2.7", xdpDrop},
		{"192.0.2.9", xdpPass},
		{"198.51.100.200", xdpDrop},
		{"198.51.101.1", xdpPass},
		{"2001:db8:1::7", xdpDrop},
		{"2001:db8:1::8", xdpPass},
		{"2001:db8:2::ffff", xdpDrop},
		{"2001:db8:2:1::1", xdpPass},
		{"192.0.2.8", xdpPass},
		{"2001:db8:3::1", xdpPass},
		{"203.0.113.9", xdpDrop},
		{"203.0.5.5", xdpDrop},
		{"::ffff:192.0.2.7", xdpDrop}, // IPv4-mapped IPv6 is the IPv4 address
	} {
		dst := "192.0.2.1"
		if netip.MustParseAddr(tc.src).Is6() {
			dst = "2001:db8::1"
		}
		f := tcpSYN(tc.src, dst, 40000, 443).with(func(f *frame) { f.flags = ack })
		expectVerdict(t, d.run(f), tc.want, tc.src)
	}
	if c := d.counters(); c.Dropped[DropBlocked] != 7 {
		t.Errorf("blocked drops %d, want 7", c.Dropped[DropBlocked])
	}
}

func TestBlockExpiresInKernel(t *testing.T) {
	d := newTestDP(t, defaults)
	d.mustBlock("192.0.2.7/32", time.Now().Add(time.Hour))
	d.mustBlock("198.51.100.0/24", time.Now().Add(time.Hour))
	ackFrom := func(src string) frame {
		return tcpSYN(src, "192.0.2.1", 40000, 443).with(func(f *frame) { f.flags = ack })
	}
	expectVerdict(t, d.run(ackFrom("192.0.2.7")), xdpDrop, "before expiry")
	expectVerdict(t, d.run(ackFrom("198.51.100.7")), xdpDrop, "before expiry (CIDR)")
	d.advance(time.Hour + time.Second)
	expectVerdict(t, d.run(ackFrom("192.0.2.7")), xdpPass, "after expiry")
	expectVerdict(t, d.run(ackFrom("198.51.100.7")), xdpPass, "after expiry (CIDR)")
}

func TestAllowlistOverridesBlockAndScan(t *testing.T) {
	d := newTestDP(t, defaults)
	d.mustAllow("192.0.2.0/24")
	d.mustBlock("192.0.2.7/32", time.Time{})
	d.mustBlock("192.0.0.0/16", time.Time{})

	expectVerdict(t, d.run(tcpSYN("192.0.2.7", "192.0.2.1", 40000, 22)), xdpPass, "blocked but allowlisted")
	expectVerdict(t, d.run(tcpSYN("192.0.3.7", "192.0.2.1", 40000, 22)), xdpDrop, "blocked, not allowlisted")

	// An allowlisted scanner: counted and reported, never blocked or dropped.
	for port := uint16(1); port <= 6; port++ {
		expectVerdict(t, d.run(tcpSYN("192.0.2.66", "192.0.2.1", 40000, port)), xdpPass, "allowlisted scanner")
	}
	var conns, scans int
	for _, ev := range d.drain() {
		switch ev := ev.(type) {
		case *Connection:
			conns++
		case *Scan:
			scans++
			if !ev.Allowlisted || ev.Blocked || ev.Src != netip.MustParseAddr("192.0.2.66") {
				t.Errorf("scan %+v, want allowlisted and not blocked", ev)
			}
		}
	}
	if conns != 7 || scans != 1 {
		t.Errorf("got %d connections and %d scans, want 7 and 1", conns, scans)
	}
	blocks, _ := d.Blocks()
	for _, b := range blocks {
		if b.Origin == OriginScan {
			t.Errorf("allowlisted scanner was blocked: %+v", b)
		}
	}
	// Overrides: 192.0.2.7 once, and 192.0.2.66 (inside the blocked /16) six times.
	if c := d.counters(); c.ScansAllowlisted != 1 || c.AllowlistOverrides != 7 {
		t.Errorf("counters %+v, want 1 allowlisted scan, 7 overrides", c)
	}
}

// SYNs of one source handled on several CPUs at once: the tracker's lock
// must let exactly one cross the threshold, and at most N pass.
func TestScanAcrossCPUs(t *testing.T) {
	// Every round is a new source of one /64 and needs its block.
	s := defaults
	s.IPv6ScanPrefix, s.MaxBlocksPerMinute = 128, 0
	d := newTestDP(t, s)
	cpus := min(runtime.NumCPU(), 4)
	if cpus < 2 {
		t.Logf("only %d CPU: the runs below cannot overlap", cpus)
	}
	const rounds = 2000
	for round := range rounds {
		src := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xaa, 14: byte(round >> 8), 15: byte(round)}).String()
		var wg sync.WaitGroup
		start := make(chan struct{})
		passed := make([]int, cpus)
		for cpu := range cpus {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer onCPU(cpu)()
				<-start
				for p := range 6 {
					b := tcpSYN(src, "2001:db8::1", 50000, uint16(1000*cpu+p)).bytes()
					ret, err := d.objs.Program.Run(&ebpf.RunOptions{Data: b})
					if err == nil && ret == xdpPass {
						passed[cpu]++
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		total := 0
		for _, n := range passed {
			total += n
		}
		if total > defaults.MaxPorts {
			t.Fatalf("round %d: %d SYNs to distinct ports passed, want at most %d", round, total, defaults.MaxPorts)
		}
	}
	var scans int
	for _, ev := range d.drain() {
		if _, ok := ev.(*Scan); ok {
			scans++
		}
	}
	if c := d.counters(); scans != rounds || c.ScansDetected != rounds || c.BlocksAdded != rounds {
		t.Errorf("%d scan events, counters %+v; want exactly one scan and block per source (%d)", scans, c, rounds)
	}
}

func TestSweepRemovesExpiredState(t *testing.T) {
	d := newTestDP(t, defaults)
	past := time.Now().Add(-time.Second)
	d.mustBlock("192.0.2.7/32", past)
	d.mustBlock("192.0.2.8/32", time.Time{})
	d.mustBlock("198.51.100.0/24", past)
	if err := d.Allow(netip.MustParsePrefix("203.0.113.0/24"), past); err != nil {
		t.Fatal(err)
	}
	// Two ports: a source's first attempt alone has no tracker entry.
	d.run(tcpSYN("192.0.2.66", "192.0.2.1", 40000, 80))
	d.run(tcpSYN("192.0.2.66", "192.0.2.1", 40001, 81))
	d.advance(20 * time.Millisecond)

	st, err := d.SweepRules()
	if err != nil {
		t.Fatal(err)
	}
	if st != (SweepStats{Blocks: 2, Allows: 1}) {
		t.Errorf("swept %+v, want 2 blocks, 1 allow", st)
	}
	if n, err := d.SweepTrackers(10 * time.Millisecond); n != 1 || err != nil {
		t.Errorf("swept %d trackers (%v), want 1", n, err)
	}
	blocks, _ := d.Blocks()
	if len(blocks) != 1 || blocks[0].Prefix.String() != "192.0.2.8/32" {
		t.Errorf("blocks left %+v, want only 192.0.2.8/32", blocks)
	}
}

func TestRuleRoundTrip(t *testing.T) {
	d := newTestDP(t, defaults)
	expires := time.Now().Add(time.Hour).Truncate(time.Second)
	for _, p := range []string{"192.0.2.7/32", "198.51.100.0/24", "2001:db8::7/128", "2001:db8::/32"} {
		if err := d.Block(netip.MustParsePrefix(p), expires); err != nil {
			t.Fatal(err)
		}
	}
	blocks, err := d.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range blocks {
		got = append(got, b.Prefix.String())
		if d := b.Expires.Sub(expires); d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("%v expires %v, want %v", b.Prefix, b.Expires, expires)
		}
		if b.Origin != OriginOperator {
			t.Errorf("%v origin %v, want operator", b.Prefix, b.Origin)
		}
	}
	slices.Sort(got)
	want := []string{"192.0.2.7/32", "198.51.100.0/24", "2001:db8::/32", "2001:db8::7/128"}
	if !slices.Equal(got, want) {
		t.Errorf("blocks %v, want %v", got, want)
	}
	if ok, err := d.Unblock(netip.MustParsePrefix("198.51.100.0/24")); !ok || err != nil {
		t.Errorf("unblock: %v %v", ok, err)
	}
	if ok, _ := d.Unblock(netip.MustParsePrefix("198.51.100.0/24")); ok {
		t.Error("second unblock found an entry")
	}
	if err := d.Block(netip.MustParsePrefix("192.0.2.7/24"), time.Time{}); err == nil {
		t.Error("a prefix with host bits set was accepted")
	}
}

func TestSettingsValidate(t *testing.T) {
	for _, s := range []Settings{
		{MaxPorts: 0, Window: time.Minute},
		{MaxPorts: MaxPortsLimit + 1, Window: time.Minute},
		{MaxPorts: 3, Window: 0},
		{MaxPorts: 3, Window: 25 * time.Hour},
		{MaxPorts: 3, Window: time.Minute, BlockDuration: -time.Second},
	} {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	if err := defaults.Validate(); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
}

func TestPrefixHintFollowsPrefixBlocks(t *testing.T) {
	d := newTestDP(t, defaults)
	hint := func() uint32 {
		var v uint32
		if err := d.objs.HbfHaveBlockPrefixes.Get(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	ack := tcpSYN("198.51.100.7", "192.0.2.1", 40000, 443).with(func(f *frame) { f.flags = ack })
	if hint() != 0 {
		t.Fatal("hint set with no prefix block")
	}
	d.mustBlock("198.51.100.0/24", time.Time{})
	expectVerdict(t, d.run(ack), xdpDrop, "CIDR block")
	if _, err := d.Unblock(netip.MustParsePrefix("198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}
	if hint() != 0 {
		t.Error("hint still set after the last prefix block went")
	}
	expectVerdict(t, d.run(ack), xdpPass, "after unblock")
	d.mustBlock("198.51.0.0/16", time.Now().Add(-time.Second)) // expired: swept below
	d.mustBlock("198.51.100.0/24", time.Time{})
	expectVerdict(t, d.run(ack), xdpDrop, "CIDR block again")
	if _, err := d.SweepRules(); err != nil {
		t.Fatal(err)
	}
	if hint() != 1 {
		t.Error("sweep cleared the hint while a live prefix block remains")
	}
	expectVerdict(t, d.run(ack), xdpDrop, "after sweep")
}

func TestScanEvidenceTimes(t *testing.T) {
	d := newTestDP(t, defaults)
	src, dst := "192.0.2.66", "203.0.113.5"
	d.run(tcpSYN(src, dst, 50000, 22))
	d.advance(300 * time.Millisecond)
	for port := uint16(80); port <= 82; port++ {
		d.run(tcpSYN(src, dst, 50000, port))
	}
	var scan *Scan
	for _, ev := range d.drain() {
		if s, ok := ev.(*Scan); ok {
			scan = s
		}
	}
	if scan == nil || len(scan.Ports) != 4 || scan.Ports[0].Port != (ports.Port{Num: 22}) {
		t.Fatalf("scan %+v", scan)
	}
	if age := scan.Time.Sub(scan.Ports[0].Seen); age < 250*time.Millisecond || age > 2*time.Second {
		t.Errorf("port 22 was tried %v before the scan, want ~300ms", age)
	}
	if age := scan.Time.Sub(scan.Ports[3].Seen); age > 100*time.Millisecond {
		t.Errorf("port 82 was tried %v before the scan, want ~0", age)
	}
}

func TestBlockManyAllOrNothing(t *testing.T) {
	d := newTestDP(t, defaults)
	var prefixes []netip.Prefix
	for i := range 150000 { // more than two batches
		prefixes = append(prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32))
	}
	prefixes = append(prefixes, mustPrefix("198.51.100.0/24"), mustPrefix("2001:db8::/48"))
	n, err := d.BlockMany(Until(slices.Values(prefixes), noExpiry))
	if err != nil || n != len(prefixes) {
		t.Fatalf("BlockMany: %d, %v", n, err)
	}
	expectVerdict(t, d.run(tcpSYN("10.1.0.5", "192.0.2.1", 1, 2)), xdpDrop, "bulk-blocked address")
	expectVerdict(t, d.run(tcpSYN("198.51.100.5", "192.0.2.1", 1, 2)), xdpDrop, "bulk-blocked prefix")
	if r, ok, err := d.LookupBlock(mustPrefix("198.51.100.0/24")); !ok || err != nil || r.Packets != 1 {
		t.Errorf("LookupBlock: %+v %v %v", r, ok, err)
	}
	if _, ok, _ := d.LookupBlock(mustPrefix("198.51.100.0/25")); ok {
		t.Error("LookupBlock found a prefix that is not there")
	}
	count := 0
	if err := d.EachBlock(func(Rule) error { count++; return nil }); err != nil || count != len(prefixes) {
		t.Errorf("EachBlock saw %d, %v", count, err)
	}
	if n, err := d.UnblockMany(slices.Values(prefixes)); n != len(prefixes) || err != nil {
		t.Errorf("UnblockMany: %d, %v", n, err)
	}

	// A bad entry after two full batches: nothing stays.
	bad := append(slices.Clone(prefixes[:140000]), netip.PrefixFrom(netip.MustParseAddr("192.0.2.7"), 24))
	if _, err := d.BlockMany(Until(slices.Values(bad), noExpiry)); err == nil {
		t.Fatal("a prefix with host bits was accepted")
	}
	count = 0
	d.EachBlock(func(Rule) error { count++; return nil })
	if count != 0 {
		t.Errorf("%d entries left after a refused bulk block", count)
	}
}

func TestMonitorModeReportsWithoutBlocking(t *testing.T) {
	s := defaults
	s.Monitor = true
	d := newTestDP(t, s)
	d.mustBlock("198.51.100.7/32", noExpiry) // manual blocks stay in force
	for port := uint16(1); port <= 6; port++ {
		expectVerdict(t, d.run(tcpSYN("192.0.2.66", "192.0.2.1", 40000, port)), xdpPass, "monitor mode")
	}
	expectVerdict(t, d.run(tcpSYN("198.51.100.7", "192.0.2.1", 40000, 22)), xdpDrop, "manual block in monitor mode")
	var scans []*Scan
	for _, ev := range d.drain() {
		if s, ok := ev.(*Scan); ok {
			scans = append(scans, s)
		}
	}
	if len(scans) != 1 || !scans[0].WouldBlock || scans[0].Blocked {
		t.Errorf("scans %+v, want one marked would-block", scans)
	}
	if blocks, _ := d.Blocks(); len(blocks) != 1 {
		t.Errorf("blocks %+v, want only the manual one", blocks)
	}
	if c := d.counters(); c.ScansMonitored != 1 || c.ScansDetected != 1 || c.BlocksAdded != 0 {
		t.Errorf("counters %+v", c)
	}
	// Back to enforce: the next scanner is blocked.
	s.Monitor = false
	d.SetSettings(s)
	for port := uint16(1); port <= 4; port++ {
		d.run(tcpSYN("192.0.2.67", "192.0.2.1", 40000, port))
	}
	if c := d.counters(); c.BlocksAdded != 1 {
		t.Errorf("enforce after monitor: %d blocks", c.BlocksAdded)
	}
}

func TestIgnoredPortsNeverCount(t *testing.T) {
	s := defaults
	s.IgnorePorts = ports.List{{Lo: 80, Hi: 80, TCP: true, UDP: true}, {Lo: 443, Hi: 443, TCP: true, UDP: true}}
	d := newTestDP(t, s)
	src, dst := "192.0.2.66", "192.0.2.1"
	for _, port := range []uint16{80, 443, 22, 25} {
		expectVerdict(t, d.run(tcpSYN(src, dst, 40000, port)), xdpPass, fmt.Sprintf("port %d", port))
	}
	expectVerdict(t, d.run(tcpSYN(src, dst, 40000, 443)), xdpPass, "retransmission to an ignored port")
	f := tcpSYN(src, dst, 40000, 80).with(func(f *frame) { f.flags = fin })
	expectVerdict(t, d.run(f), xdpDrop, "stealth probe to an ignored port")
	expectVerdict(t, d.run(tcpSYN(src, dst, 40000, 53)), xdpPass, "3rd counted port")
	expectVerdict(t, d.run(tcpSYN(src, dst, 40000, 110)), xdpDrop, "4th counted port")

	var conns int
	var scan *Scan
	for _, ev := range d.drain() {
		switch ev := ev.(type) {
		case *Connection:
			conns++
		case *Scan:
			scan = ev
		}
	}
	if conns != 5 {
		t.Errorf("%d connections reported, want 5 (the retransmission once)", conns)
	}
	if scan == nil || !slices.Equal(portsOf(scan), []uint16{22, 25, 53, 110}) {
		t.Errorf("scan %+v, want the counted ports 22,25,53,110", scan)
	}
}

// TestOpenWritesWhileTheProgramIsVerified: Open hands back maps that take
// blocks at once, and the program Ready waits for enforces them.
func TestOpenWritesWhileTheProgramIsVerified(t *testing.T) {
	testenv.RequirePrivileged(t)
	dp, err := Open(Options{firstAttemptSlots: testFirstAttemptSlots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	blocked := []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("2001:db8:7::7/128")}
	if n, err := dp.BlockMany(Until(slices.Values(blocked), noExpiry)); n != 2 || err != nil {
		t.Fatalf("BlockMany before the program is ready: %d, %v", n, err)
	}
	if err := dp.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := dp.SetSettings(defaults); err != nil {
		t.Fatal(err)
	}
	d := &testDP{Dataplane: dp, t: t}
	expectVerdict(t, d.run(tcpSYN("198.51.100.7", host4, 40000, 80)), xdpDrop, "a SYN from a source blocked before Ready")
	expectVerdict(t, d.run(tcpSYN("198.51.100.8", host4, 40000, 80)), xdpPass, "a SYN from another source")
	if dp.ProgramID() == 0 {
		t.Error("no program id once ready")
	}
}

// Batches share one slice of a list's value; a batch whose keys share
// another value, or differ, gets its own: each entry keeps its expiry.
func TestBlockManyKeepsEachBatchsExpiry(t *testing.T) {
	d := newTestDP(t, defaults)
	soon, later := time.Now().Add(time.Hour).Truncate(time.Second), time.Now().Add(2*time.Hour).Truncate(time.Second)
	expiry := func(i int) time.Time {
		switch {
		case i < batchSize: // a batch all of one value
			return soon
		case i < 2*batchSize: // a batch all of another
			return later
		case i%2 == 0: // a batch of both
			return soon
		}
		return later
	}
	addr := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	n := 3 * batchSize
	written, err := d.BlockMany(func(yield func(netip.Prefix, time.Time) bool) {
		for i := range n {
			if !yield(addr(i), expiry(i)) {
				return
			}
		}
	})
	if err != nil || written != n {
		t.Fatalf("BlockMany: %d, %v", written, err)
	}
	for _, i := range []int{0, batchSize - 1, batchSize, 2*batchSize - 1, 2 * batchSize, 2*batchSize + 1, n - 1} {
		r, ok, err := d.LookupBlock(addr(i))
		if !ok || err != nil || r.Expires.Sub(expiry(i)).Abs() > time.Second {
			t.Errorf("entry %d: %+v %v %v, want it until %v", i, r, ok, err, expiry(i))
		}
	}
}
