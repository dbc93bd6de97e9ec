package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/etcdtest"
)

// The fleet at scale, in one process and without XDP: members, each its own
// client, watch and receiver, on one etcd, directly or through etcd
// grpc-proxy. A
// benchmark that reports, not a timed test: run it with
// go test -run '^$' -bench FleetScale -benchtime 1x ./internal/fleet/
const (
	scalePublishers = 50
	scaleBlocks     = 10000
	scaleRate       = 200 // blocks a second overall,
	scaleBurst      = 500 // and every tenth second this many at once
)

// goalRounds: a run whose figures a goal judges is made this many times,
// and each figure is the median: one run's CPU per delivery on this
// 2-core machine moves by a fifth from one to the next.
const goalRounds = 3

// The fleet is 500 members. Every event reaches every member, and
// in one process beside etcd, 500 members need about 4 cores at this
// rate: on a 2-core machine, 250 and 100 show where the CPU runs out.
func BenchmarkFleetScale(b *testing.B) {
	for _, members := range []int{500, 250, 100} {
		for _, viaProxy := range []bool{false, true} {
			name := fmt.Sprintf("members=%d/direct", members)
			if viaProxy {
				name = fmt.Sprintf("members=%d/grpc-proxy", members)
			}
			rounds := 1
			if viaProxy && members <= 250 { // the runs the goals judge
				rounds = goalRounds
			}
			b.Run(name, func(b *testing.B) {
				for range b.N {
					var runs []map[string]float64
					for range rounds {
						runs = append(runs, runScale(b, members, viaProxy))
					}
					for unit := range runs[0] {
						var vs []float64
						for _, r := range runs {
							vs = append(vs, r[unit])
						}
						slices.Sort(vs)
						b.ReportMetric(vs[len(vs)/2], unit)
					}
				}
			})
		}
	}
}

// scaleRecord is what one member saw, small beside what the member holds:
// blocks are numbered by their address.
type scaleRecord struct {
	mu     sync.Mutex
	seen   []bool
	count  int
	delays []time.Duration
}

// scaleBlock is the i-th block published.
func scaleBlock(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

func scaleIndex(p netip.Prefix) int {
	a := p.Addr().As4()
	return int(a[1])<<16 | int(a[2])<<8 | int(a[3])
}

// runScale runs the fleet once, and returns its figures by unit.
func runScale(b *testing.B, members int, viaProxy bool) map[string]float64 {
	etcd := etcdtest.Start(b, etcdtest.Options{})
	endpoint := etcd.Endpoint()
	if viaProxy {
		endpoint = etcd.Proxy()
	}
	// The members share one process's collector here, with a heap of
	// gigabytes; each real node has its own, and a heap of megabytes.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cpuBefore, etcdBefore := processCPU(b), etcd.CPU()
	var wg sync.WaitGroup
	records := make([]*scaleRecord, members)
	nodes := make([]*Node, members)
	var converged atomic.Int64 // members holding every block
	var done time.Time
	var doneOnce sync.Once
	for i := range members {
		rec := &scaleRecord{seen: make([]bool, scaleBlocks), delays: make([]time.Duration, 0, scaleBlocks)}
		records[i] = rec
		name := "m" + strconv.Itoa(i)
		n, err := NewNode(Config{Endpoints: []string{endpoint}, Layout: testLayout, Node: name,
			Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		nodes[i] = n
		wg.Go(func() { n.Run(ctx) })
		arrived := func(blk Block, at time.Time) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if rec.seen[scaleIndex(blk.Prefix)] {
				return
			}
			rec.seen[scaleIndex(blk.Prefix)] = true
			rec.count++
			rec.delays = append(rec.delays, at.Sub(blk.Created))
			if rec.count == scaleBlocks-ownBlocks(i) {
				if converged.Add(1) == int64(members) {
					doneOnce.Do(func() { done = at })
				}
			}
		}
		wg.Go(func() { receive(ctx, n, arrived) })
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, n := range nodes {
		for !n.Status().Connected {
			if time.Now().After(deadline) {
				b.Fatalf("members not all connected after 2 minutes")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Publish: scaleRate blocks a second, a burst every tenth second,
	// spread over the publishers ten at a time, as a node scanned by many
	// sources at once detects them: each SetOwn its set so far, and the
	// ten share a transaction.
	own := make([][]Block, scalePublishers)
	start := time.Now()
	next := 0
	for second := 0; next < scaleBlocks; second++ {
		batch := scaleRate
		if second%10 == 9 {
			batch = scaleBurst
		}
		tick := start.Add(time.Duration(second) * time.Second)
		time.Sleep(time.Until(tick))
		// A second's blocks go out in ten steps of a tenth each.
		for step := range 10 {
			time.Sleep(time.Until(tick.Add(time.Duration(step) * 100 * time.Millisecond)))
			touched := map[int]bool{}
			for range batch / 10 {
				if next == scaleBlocks {
					break
				}
				p := (next / 10) % scalePublishers
				own[p] = append(own[p], Block{Prefix: scaleBlock(next),
					Origin: "scan", Reason: "port scan", Created: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
				touched[p] = true
				next++
			}
			for p := range touched {
				nodes[p].SetOwn(slices.Clone(own[p]))
			}
		}
	}
	published := time.Since(start) // the last block handed over
	for converged.Load() < int64(members) {
		if time.Since(start) > 5*time.Minute {
			for i, n := range nodes {
				rec := records[i]
				rec.mu.Lock()
				if got, want := rec.count, scaleBlocks-ownBlocks(i); got < want {
					b.Logf("m%d holds %d of %d blocks: %+v", i, got, want, n.Status())
				}
				rec.mu.Unlock()
			}
			b.Fatalf("%d of %d members converged after 5 minutes; failed operations: %v", converged.Load(), members, failedOps(nodes))
		}
		time.Sleep(50 * time.Millisecond)
	}
	cpu := processCPU(b) - cpuBefore // the members' and publishers', not etcd's: it is a child
	etcdCPU := etcd.CPU() - etcdBefore
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	var all []time.Duration
	for _, rec := range records {
		all = append(all, rec.delays...)
	}
	slices.Sort(all)
	var failures uint64
	for _, c := range failedOps(nodes) {
		failures += c
	}
	if failures > 0 {
		b.Logf("failed operations: %v", failedOps(nodes))
	}
	cancel()
	wg.Wait()
	return map[string]float64{
		"s-to-converge":        done.Sub(start).Seconds(),
		"s-publishing":         published.Seconds(),
		"ms-p50":               float64(all[len(all)/2].Milliseconds()),
		"ms-p99":               float64(all[len(all)*99/100].Milliseconds()),
		"MiB-per-member":       float64(after.HeapAlloc-before.HeapAlloc) / float64(members) / (1 << 20),
		"us-cpu/delivery":      float64(cpu.Microseconds()) / float64(len(all)),
		"us-etcd-cpu/delivery": float64(etcdCPU.Microseconds()) / float64(len(all)),
		"failed-ops":           float64(failures),
	}
}

// receive does what a daemon does with each change of a member's view:
// takes what changed to its receiver, which decides what applies; a block
// has arrived when it is decided new here.
func receive(ctx context.Context, n *Node, arrived func(Block, time.Time)) {
	r := NewReceiver(n.cfg.Node, Limits{MinReporters: 1})
	pol := Policy{Check: func(netip.Prefix) error { return nil }, Generation: 1}
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.Changed():
			now := time.Now()
			for _, a := range r.Update(n.Take(), n.Block, pol, now).New() {
				arrived(a.Block, now)
			}
		}
	}
}

// processCPU is the CPU time this process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ownBlocks is how many of the blocks member i publishes itself.
func ownBlocks(i int) int {
	if i >= scalePublishers {
		return 0
	}
	n := scaleBlocks / scalePublishers
	if i < scaleBlocks%scalePublishers {
		n++
	}
	return n
}

// failedOps sums the members' failed operations, by operation.
func failedOps(nodes []*Node) map[string]uint64 {
	sum := map[string]uint64{}
	for _, n := range nodes {
		for op, c := range n.Counts().Errors {
			sum[op] += c
		}
	}
	return sum
}
