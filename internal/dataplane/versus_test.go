package dataplane

import (
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

// BenchmarkVersus runs each frame through hbf, the semantic reference
// (bpf/testdata/reference.c: the least code that keeps hbf's promises, on hbf's own
// maps), xdp-tools' xdp-filter with every feature, and a bare XDP_PASS,
// in interleaved rounds, and reports each one's median beside the
// others. hbf holds a million blocked addresses and one /15; xdp-filter
// holds what its maps take (10,000 addresses each family, no prefixes).
//
// The ratios are what count: x-ref is hbf against the reference, x-filter
// against xdp-filter, and excess is (hbf - bare) / (ref - bare), the
// work hbf does for every unit the reference does.
func BenchmarkVersus(b *testing.B) {
	testenv.RequirePrivileged(b)
	hbf, ref := versusPrograms(b, versusMillion)
	filter := xdpFilter(b)
	bare := passProgram(b, HookXDP)

	const syn4, syn6 = "198.51.100.7", "2001:db8:7::7"
	ack := func(f frame) frame { return f.with(func(f *frame) { f.flags = ack }) }
	arp := make([]byte, 60)
	arp[12], arp[13] = 0x08, 0x06
	rows := []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"ACK-IPv4", ack(tcpSYN(syn4, "203.0.113.5", 40000, 443)).bytes(), xdpPass},
		{"ACK-IPv6", ack(tcpSYN(syn6, "2001:db8::1", 40000, 443)).bytes(), xdpPass},
		{"blocked-IPv4", ack(tcpSYN(versusBlocked4, "203.0.113.5", 40000, 443)).bytes(), xdpDrop},
		{"blocked-IPv4-in-/15", ack(tcpSYN("100.65.3.4", "203.0.113.5", 40000, 443)).bytes(), xdpDrop},
		{"blocked-IPv6", ack(tcpSYN(versusBlocked6, "2001:db8::1", 40000, 443)).bytes(), xdpDrop},
		{"SYN-IPv4-repeated", tcpSYN(syn4, "203.0.113.5", 40000, 443).bytes(), xdpPass},
		{"SYN-IPv6-repeated", tcpSYN(syn6, "2001:db8::1", 40000, 443).bytes(), xdpPass},
		{"ARP", arp, xdpPass},
	}
	for _, row := range rows {
		b.Run(row.name, func(b *testing.B) {
			for _, p := range []*ebpf.Program{hbf.objs.Program, ref} {
				ret, _, err := p.Benchmark(row.frame, 1, nil)
				if err != nil {
					b.Fatal(err)
				}
				if ret != row.want {
					b.Fatalf("verdict %s, want %s", verdict(ret), verdict(row.want))
				}
			}
			const rounds = 5
			progs := []*ebpf.Program{hbf.objs.Program, ref, filter, bare}
			times := make([][]time.Duration, len(progs))
			b.ResetTimer()
			for range rounds {
				for i, p := range progs {
					_, d, err := p.Benchmark(row.frame, b.N, nil)
					if err != nil {
						b.Fatal(err)
					}
					times[i] = append(times[i], d)
				}
			}
			med := make([]float64, len(progs))
			for i, ts := range times {
				med[i] = float64(median(ts).Nanoseconds())
			}
			h, r, f, base := med[0], med[1], med[2], med[3]
			b.ReportMetric(h, "hbf-ns")
			b.ReportMetric(r, "ref-ns")
			b.ReportMetric(f, "filter-ns")
			b.ReportMetric(base, "bare-ns")
			b.ReportMetric(h/r, "x-ref")
			b.ReportMetric(h/f, "x-filter")
			if r > base {
				b.ReportMetric((h-base)/(r-base), "excess")
			}
		})
	}
}

// The sources the versus frames block.
const (
	versusBlocked4 = "10.0.7.1"
	versusBlocked6 = "2001:db8:bad::7"
)

// versusMillion blocks a million addresses (IPv4 and IPv6, the frames'
// among them) and 100.64.0.0/15.
func versusMillion(dp *Dataplane) error {
	million := func(yield func(netip.Prefix) bool) {
		for i := range 1 << 19 {
			a4 := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			var a6 [16]byte
			copy(a6[:], netip.MustParseAddr("2001:db8:bad::").AsSlice())
			binary.BigEndian.PutUint32(a6[12:], uint32(i))
			if !yield(netip.PrefixFrom(a4, 32)) || !yield(netip.PrefixFrom(netip.AddrFrom16(a6), 128)) {
				return
			}
		}
	}
	if _, err := dp.BlockMany(Until(million, time.Now().Add(time.Hour))); err != nil {
		return err
	}
	return dp.Block(netip.MustParsePrefix("100.64.0.0/15"), time.Time{})
}

// versusCIDRs blocks 10,000 /24s: every other /24 of 10.0.0.0/8 from the
// start, up to 10.78.31.0/24.
func versusCIDRs(dp *Dataplane) error {
	for i := range 10000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 128), byte(2 * (i % 128)), 0}), 24)
		if err := dp.Block(p, time.Time{}); err != nil {
			return err
		}
	}
	return nil
}

// versusPrograms loads hbf with the allowlist a daemon keeps and what
// block adds (nil: nothing), and the reference on the same maps.
func versusPrograms(b *testing.B, block func(*Dataplane) error) (*Dataplane, *ebpf.Program) {
	b.Helper()
	dp, err := Load(Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dp.Close() })
	if err := dp.SetSettings(defaults); err != nil {
		b.Fatal(err)
	}
	// What the daemon always allows: loopback, the host's addresses, its
	// gateways. The IPv6 ones share the blocked IPv6 source's /32.
	for _, p := range []string{"127.0.0.0/8", "::1/128", "203.0.113.5/32", "192.0.2.1/32", "2001:db8::1/128", "fe80::1/128"} {
		if err := dp.Allow(netip.MustParsePrefix(p), time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	if block != nil {
		if err := block(dp); err != nil {
			b.Fatal(err)
		}
	}
	spec, err := loadReference()
	if err != nil {
		b.Fatal(err)
	}
	if err := spec.Variables[referenceVarRefHavePrefixes].Set(map[bool]uint32{false: 0, true: 1}[block != nil]); err != nil {
		b.Fatal(err)
	}
	var objs referenceObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		"blocks4": dp.objs.Blocks4, "blocks6": dp.objs.Blocks6, "block_prefixes": dp.objs.BlockPrefixes, "allow_prefixes": dp.objs.AllowPrefixes,
	}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { objs.Close() })
	drain(b, dp.objs.Events)
	drain(b, objs.Events)
	return dp, objs.Reference
}

// drain reads a ring buffer for as long as the benchmark runs, as the
// daemon does: the programs' events are never lost to a full ring.
func drain(b *testing.B, events *ebpf.Map) {
	rd, err := ringbuf.NewReader(events)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rd.Close() })
	go func() {
		var rec ringbuf.Record
		for rd.ReadInto(&rec) == nil {
		}
	}()
}

// BenchmarkVersusDistinct runs frames that differ one from the next,
// one run each, through hbf and the reference in interleaved rounds: SYNs
// that are each a new attempt (a known source's new connection, then
// sources never seen), and established ACKs cycling through 65,536 sources
// with no blocks and with a million, to show what the lookups cost when
// caches cannot hold the entries.
func BenchmarkVersusDistinct(b *testing.B) {
	testenv.RequirePrivileged(b)
	full, fullRef := versusPrograms(b, versusMillion)
	empty, emptyRef := versusPrograms(b, nil)
	src4 := func(i int) string { return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String() }
	rows := []struct {
		name   string
		frames func(i int) frame
		// between rounds: the tracker forgets, so a never-seen source is
		// never seen again
		reset bool
	}{
		{"SYN-new-attempt", func(i int) frame {
			return tcpSYN(src4(i%4096), "203.0.113.5", uint16(1024+i/4096%60000), 443)
		}, false},
		{"SYN-never-seen-source", func(i int) frame {
			a := netip.AddrFrom4([4]byte{100, 96 + byte(i>>24&0x1f), byte(i >> 8), byte(i)})
			return tcpSYN(a.String(), "203.0.113.5", 40000, 443)
		}, true},
		{"ACK-65536-sources", func(i int) frame {
			return tcpSYN(src4(i%65536), "203.0.113.5", 40000, 443).with(func(f *frame) { f.flags = ack })
		}, false},
	}
	for _, row := range rows {
		b.Run(row.name, func(b *testing.B) {
			// A quarter million frames hold every row's cycle (65,536
			// sources at most) four times over, and keep the run short.
			frames := make([][]byte, min(b.N, 1<<18))
			for i := range frames {
				frames[i] = row.frames(i).bytes()
			}
			med := distinctMedians(b, frames, row.reset, []versusProg{
				{full, full.objs.Program, "hbf"}, {full, fullRef, "ref"},
				{empty, empty.objs.Program, "hbf-0-blocks"}, {empty, emptyRef, "ref-0-blocks"}})
			b.ReportMetric(med["hbf"]/med["ref"], "x-ref")
			b.ReportMetric(med["hbf"]/med["hbf-0-blocks"], "x-0-blocks")
		})
	}
}

// BenchmarkVersusCIDRs runs established ACKs from 65,536 sources, one run
// each, through hbf and the reference holding 10,000 blocked /24s (and no
// addresses): half the sources in a blocked /24, half in the /24 beside
// it, so every lookup walks the trie.
func BenchmarkVersusCIDRs(b *testing.B) {
	testenv.RequirePrivileged(b)
	dp, ref := versusPrograms(b, versusCIDRs)
	ackFrom := func(i int) []byte {
		k := i % 65536
		src := netip.AddrFrom4([4]byte{10, byte(k / 256 % 79), byte(k), 1})
		return tcpSYN(src.String(), "203.0.113.5", 40000, 443).with(func(f *frame) { f.flags = ack }).bytes()
	}
	for _, p := range []*ebpf.Program{dp.objs.Program, ref} {
		for i, want := range []uint32{xdpDrop, xdpPass} { // 10.0.0.1, 10.0.1.1
			if ret, _, err := p.Benchmark(ackFrom(i), 1, nil); err != nil || ret != want {
				b.Fatalf("frame %d: verdict %s (%v), want %s", i, verdict(ret), err, verdict(want))
			}
		}
	}
	frames := make([][]byte, min(b.N, 1<<18))
	for i := range frames {
		frames[i] = ackFrom(i)
	}
	med := distinctMedians(b, frames, false, []versusProg{{dp, dp.objs.Program, "hbf"}, {dp, ref, "ref"}})
	b.ReportMetric(med["hbf"]/med["ref"], "x-ref")
}

// A versusProg is a program of the distinct-frame benchmarks: its
// Dataplane (whose tracker a reset empties) and the key of its metric.
type versusProg struct {
	dp  *Dataplane
	p   *ebpf.Program
	key string
}

// distinctMedians runs each frame once through each program, in three
// interleaved rounds, and reports and returns each program's median ns
// per frame. reset empties the trackers before each program's round.
func distinctMedians(b *testing.B, frames [][]byte, reset bool, progs []versusProg) map[string]float64 {
	b.Helper()
	times := map[string][]time.Duration{}
	b.ResetTimer()
	for range 3 {
		for _, p := range progs {
			if reset {
				b.StopTimer()
				if err := p.dp.emptyTracker(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			var total time.Duration
			for _, f := range frames {
				_, d, err := p.p.Benchmark(f, 1, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += d
			}
			times[p.key] = append(times[p.key], total/time.Duration(len(frames)))
		}
	}
	med := map[string]float64{}
	for k, ts := range times {
		med[k] = float64(median(ts).Nanoseconds())
		b.ReportMetric(med[k], k+"-ns")
	}
	return med
}

// xdpFilterObject is xdp-tools' xdp-filter with every feature, in deny
// mode, as Debian's xdp-tools installs it.
const xdpFilterObject = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_all.o"

// xdpFilter loads xdp-filter's program with its maps pinned in a folder
// of the benchmark's, and denies the versus frames' sources and 9,999
// more addresses of each family: what its maps hold.
func xdpFilter(b *testing.B) *ebpf.Program {
	b.Helper()
	testenv.RequireCommand(b, "xdp-filter")
	spec, err := ebpf.LoadCollectionSpec(xdpFilterObject)
	if err != nil {
		b.Fatal(err)
	}
	if err := ensureBPFFS(DefaultBPFFS); err != nil {
		b.Fatal(err)
	}
	pin, err := os.MkdirTemp(DefaultBPFFS, "hbfversus")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(pin) })
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pin}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { coll.Close() })
	const mapFlagSrc = 1 // MAP_FLAG_SRC of xdp-filter's common_kern_user.h
	perCPU := make([]uint64, ebpf.MustPossibleCPU())
	for i := range perCPU {
		perCPU[i] = mapFlagSrc
	}
	v4, v6 := coll.Maps["filter_ipv4"], coll.Maps["filter_ipv6"]
	for i := range 10000 {
		a4 := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if i == 0 {
			a4 = netip.MustParseAddr(versusBlocked4)
		}
		var a6 [16]byte
		copy(a6[:], netip.MustParseAddr("2001:db8:bad::").AsSlice())
		binary.BigEndian.PutUint32(a6[12:], uint32(i))
		if i == 0 {
			a6 = netip.MustParseAddr(versusBlocked6).As16()
		}
		if err := v4.Put(a4.As4(), perCPU); err != nil {
			b.Fatal(err)
		}
		if err := v6.Put(a6, perCPU); err != nil {
			b.Fatal(err)
		}
	}
	return coll.Programs["xdpfilt_dny_all"]
}
