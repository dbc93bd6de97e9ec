package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/hbf-firewall/hbf/internal/limit"
	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// passProgram is the baseline: a program of the hook's type that only
// passes (XDP_PASS; TC_ACT_UNSPEC, the next program decides). Every result
// below is reported beside it, measured in the same run, since the
// BPF_PROG_TEST_RUN harness itself costs tens of ns on this kind of VM, and
// more for an skb than for an XDP buffer.
func passProgram(b *testing.B, h Hook) *ebpf.Program {
	b.Helper()
	typ, ret := ebpf.XDP, int32(xdpPass)
	if h == HookTCX {
		typ, ret = ebpf.SchedCLS, tcActUnspec
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         typ,
		License:      "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { prog.Close() })
	return prog
}

// report adds the per-packet cost, the baseline's and their difference.
func report(b *testing.B, hbf, pass time.Duration) {
	b.ReportMetric(float64(hbf.Nanoseconds()), "ns/pkt")
	b.ReportMetric(float64(pass.Nanoseconds()), "pass-ns/pkt")
	b.ReportMetric(float64(hbf.Nanoseconds()-pass.Nanoseconds()), "delta-ns/pkt")
	b.ReportMetric(float64(hbf)/float64(pass), "x-pass")
}

func benchDP(b *testing.B, h Hook, populated bool) *Dataplane {
	b.Helper()
	testenv.RequirePrivileged(b)
	dp, err := Load(Options{Hook: h})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dp.Close() })
	if err := dp.SetSettings(defaults); err != nil {
		b.Fatal(err)
	}
	if err := dp.Allow(netip.MustParsePrefix("203.0.113.1/32"), time.Time{}); err != nil {
		b.Fatal(err)
	}
	if populated {
		// 10,000 blocked addresses and 1,000 blocked /24s, none of them
		// the benchmark's allowed source.
		for i := range 10000 {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
			if err := dp.Block(netip.PrefixFrom(a, 32), time.Now().Add(time.Hour)); err != nil {
				b.Fatal(err)
			}
		}
		for i := range 1000 {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(i >> 8), byte(i), 0}), 24)
			if err := dp.Block(p, time.Time{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	return dp
}

// benchSame runs one frame b.N times in the kernel through both programs.
func benchSame(b *testing.B, dp *Dataplane, f frame, want uint32) {
	pass := passProgram(b, dp.hook)
	data := f.bytes()
	b.ResetTimer()
	ret, hbf, err := dp.objs.Program.Benchmark(data, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	if v, err := dp.hook.xdpVerdict(ret); err != nil || v != want {
		b.Fatalf("verdict %s (%v), want %s", verdict(v), err, verdict(want))
	}
	_, base, err := pass.Benchmark(data, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	report(b, hbf, base)
}

// benchDistinct runs a different frame each time (one run per syscall), for
// paths a repeated frame cannot take: a new attempt each time, a new source
// each time. The baseline is measured the same way.
func benchDistinct(b *testing.B, dp *Dataplane, frames func(i int) frame, want uint32, every int, reset func()) {
	pass := passProgram(b, dp.hook)
	rd, err := dp.Events()
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	go func() { // keep the ring drained, as the daemon does
		for {
			if _, err := rd.Read(context.Background()); errors.Is(err, ErrClosed) {
				return
			}
		}
	}()
	// Frames are built ahead, a chunk at a time, so that building them
	// between runs does not cool the caches the runs use.
	const chunk = 4096
	data := make([][]byte, chunk)
	run := func(p *ebpf.Program, check bool) time.Duration {
		var total time.Duration
		for i := range b.N {
			if reset != nil && i > 0 && i%every == 0 {
				reset() // between runs: not part of the measured time
			}
			if i%chunk == 0 {
				for j := range data {
					data[j] = frames(i + j).bytes()
				}
			}
			ret, d, err := p.Benchmark(data[i%chunk], 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			if v, err := dp.hook.xdpVerdict(ret); check && (err != nil || v != want) {
				b.Fatalf("frame %d: verdict %s (%v), want %s", i, verdict(v), err, verdict(want))
			}
			total += d
		}
		return total / time.Duration(b.N)
	}
	b.ResetTimer()
	hbf := run(dp.objs.Program, true)
	base := run(pass, false)
	report(b, hbf, base)
}

// BenchmarkXDP and BenchmarkTC run the same frames through each build of
// the program: what a packet costs at each Hook, beside a bare program of
// that hook.
func BenchmarkXDP(b *testing.B) { benchmarkHook(b, HookXDP) }

func BenchmarkTC(b *testing.B) { benchmarkHook(b, HookTCX) }

func benchmarkHook(b *testing.B, h Hook) {
	const src, dst = "198.51.100.7", "203.0.113.5"
	ackFrame := tcpSYN(src, dst, 40000, 443).with(func(f *frame) { f.flags = ack })
	for _, populated := range []bool{false, true} {
		maps := "empty-maps"
		if populated {
			maps = "10k-blocks"
		}
		b.Run("established-ACK/"+maps, func(b *testing.B) {
			benchSame(b, benchDP(b, h, populated), ackFrame, xdpPass)
		})
		b.Run("blocked-address/"+maps, func(b *testing.B) {
			dp := benchDP(b, h, populated)
			if err := dp.Block(netip.MustParsePrefix(src+"/32"), time.Now().Add(time.Hour)); err != nil {
				b.Fatal(err)
			}
			benchSame(b, dp, ackFrame, xdpDrop)
		})
		b.Run("blocked-address-watched/"+maps, func(b *testing.B) {
			// hbf top attached: the block is noted at marks of its count.
			dp := benchDP(b, h, populated)
			if err := dp.Block(netip.MustParsePrefix(src+"/32"), time.Now().Add(time.Hour)); err != nil {
				b.Fatal(err)
			}
			if err := dp.WatchHot(true); err != nil {
				b.Fatal(err)
			}
			benchSame(b, dp, ackFrame, xdpDrop)
		})
		b.Run("blocked-CIDR/"+maps, func(b *testing.B) {
			dp := benchDP(b, h, populated)
			if err := dp.Block(netip.MustParsePrefix("198.51.100.0/24"), time.Time{}); err != nil {
				b.Fatal(err)
			}
			benchSame(b, dp, ackFrame, xdpDrop)
		})
	}
	b.Run("SYN-retransmission", func(b *testing.B) {
		benchSame(b, benchDP(b, h, true), tcpSYN(src, dst, 40000, 443), xdpPass)
	})
	benchmarkClosedPorts(b, h)
	b.Run("new-SYN-reported", func(b *testing.B) {
		// A known source's new connection to a port it used: tracked,
		// reported through the ring buffer, far from the threshold.
		benchDistinct(b, benchDP(b, h, true), func(i int) frame {
			return tcpSYN(src, dst, uint16(1024+i%60000), 443)
		}, xdpPass, 0, nil)
	})
	b.Run("new-SYN-new-source", func(b *testing.B) {
		// Every SYN from a source never seen (a spoofed-source flood): its
		// first attempt takes a slot of the fixed first-attempt table,
		// nothing is allocated. Each in a /64 of its own, as IPv6 sources
		// are counted per prefix.
		dp := benchDP(b, h, true)
		benchDistinct(b, dp, func(i int) frame {
			a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 4: byte(i >> 24), 5: byte(i >> 16), 6: byte(i >> 8), 7: byte(i), 15: 1})
			return tcpSYN(a.String(), "2001:db8::1", 40000, 443)
		}, xdpPass, 50000, func() {
			if _, err := dp.SweepTrackers(0); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// benchmarkClosedPorts measures what telling closed ports from open ones
// costs: the lookups run on UDP datagrams to the host, and with
// --count-ports closed on SYNs. Each row also reports its cost against
// an established flow's ACK (x-ACK), measured in the same program: the
// goal for a datagram to an open port is 1.5x at most.
func benchmarkClosedPorts(b *testing.B, h Hook) {
	const src, host = "198.51.100.7", "203.0.113.5"
	ack := tcpSYN(src, host, 40000, 443).with(func(f *frame) { f.flags = ack })
	onHost := func(b *testing.B, s Settings) *testDP {
		dp := benchDP(b, h, true)
		if err := dp.SetSettings(s); err != nil {
			b.Fatal(err)
		}
		d := &testDP{Dataplane: dp, t: b, ns: newNetns(b)}
		if err := dp.SetLocalAddrs([]netip.Addr{netip.MustParseAddr(host)}); err != nil {
			b.Fatal(err)
		}
		d.ns.listenUDP(b, "udp4", "0.0.0.0:53")
		d.ns.listenUDP(b, "udp4", "0.0.0.0:5353")
		d.ns.listenTCP(b, "tcp4", "0.0.0.0:443")
		if err := dp.SetServed([]ports.Port{{Num: 4789, Proto: ports.UDP}}); err != nil {
			b.Fatal(err)
		}
		return d
	}
	closed := defaults
	closed.CountClosed = true
	// Limits that every packet of a row stays under (see underLimit).
	limited := defaults
	limited.Limits = []limit.Limit{{Port: ports.Port{Num: 53, Proto: ports.UDP}, Count: limit.MaxCount, Window: time.Second, Action: limit.Drop},
		{Port: ports.Port{Num: 443}, Count: limit.MaxCount, Window: time.Second, Action: limit.Drop}}
	for _, c := range []struct {
		name string
		s    Settings
		f    frame
		// versus, when set, is measured beside f in the same program
		// and rounds, for x-versus: what the limit adds to the same packet
		// to a port without one.
		versus frame
	}{
		{"UDP-open-port", defaults, udpDatagram(src, host, 40000, 53), frame{}},
		{"UDP-limited-port", limited, udpDatagram(src, host, 40000, 53), udpDatagram(src, host, 40000, 5353)},
		{"SYN-limited-port", limited, tcpSYN(src, host, 40000, 443), tcpSYN(src, host, 40000, 8443)},
		{"UDP-closed-port", defaults, udpDatagram(src, host, 40000, 161), frame{}},
		{"UDP-DNAT-port", defaults, udpDatagram(src, host, 40000, 4789), frame{}},
		{"UDP-not-the-host", defaults, udpDatagram(src, "203.0.113.9", 40000, 161), frame{}},
		{"SYN-no-lookup", defaults, tcpSYN(src, host, 40000, 443), frame{}},
		{"SYN-lookup-open-port", closed, tcpSYN(src, host, 40000, 443), frame{}},
		{"SYN-lookup-closed-port", closed, tcpSYN(src, host, 40000, 22), frame{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			d := onHost(b, c.s)
			underLimit(b, d.Dataplane)
			pass := passProgram(b, h)
			var hbf, base, acked, versus time.Duration
			err := d.ns.do(func() error {
				// Once untimed: the first packet of a source takes its
				// first-attempt slot; the rows measure the packets after.
				if _, err := d.runFrame(c.f.bytes()); err != nil {
					return err
				}
				ret, _, err := d.objs.Program.Benchmark(c.f.bytes(), 1, nil)
				if err != nil {
					return err
				}
				if v, err := h.xdpVerdict(ret); err != nil || v != xdpPass {
					return fmt.Errorf("verdict %s (%v), want PASS", verdict(v), err)
				}
				// Five interleaved rounds, medians: x-ACK compares two
				// runs, which one slow moment would skew.
				type run struct {
					p *ebpf.Program
					f []byte
				}
				runs := []run{{d.objs.Program, c.f.bytes()}, {pass, c.f.bytes()}, {d.objs.Program, ack.bytes()}}
				if c.versus.dport != 0 {
					runs = append(runs, run{d.objs.Program, c.versus.bytes()})
				}
				rounds := make([][]time.Duration, len(runs))
				b.ResetTimer()
				for range 5 {
					for i, r := range runs {
						_, t, err := r.p.Benchmark(r.f, b.N, nil)
						if err != nil {
							return err
						}
						rounds[i] = append(rounds[i], t)
					}
				}
				hbf, base, acked = median(rounds[0]), median(rounds[1]), median(rounds[2])
				if c.versus.dport != 0 {
					versus = median(rounds[3])
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			report(b, hbf, base)
			b.ReportMetric(float64(hbf)/float64(acked), "x-ACK")
			if versus != 0 {
				b.ReportMetric(float64(hbf)/float64(versus), "x-versus")
			}
		})
	}
}

// underLimit gives every limit a window of 0 ms: a source's log is then
// never full, so each packet of a row takes the path of one under its
// limit (the log read, and for a datagram written) however many the
// benchmark sends.
func underLimit(b testing.TB, d *Dataplane) {
	var k uint32
	var r hbfLimitRule
	var keys []uint32
	it := d.objs.Limits.Iterate()
	for it.Next(&k, &r) {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := d.objs.Limits.Lookup(k, &r); err != nil {
			b.Fatal(err)
		}
		r.WindowMs = 0
		if err := d.objs.Limits.Update(k, r, ebpf.UpdateExist); err != nil {
			b.Fatal(err)
		}
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
