package dataplane

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

// BenchmarkEventReader measures the daemon's reader of connection events:
// a generator program (bpf/eventgen.c) fills hbf's ring as fast as one CPU
// can, 256 events a run, and the reader decodes them on the other. It
// reports the events a second that reached the reader and the events lost
// to a full ring; the goal is a million a second with none lost.
func BenchmarkEventReader(b *testing.B) {
	testenv.RequirePrivileged(b)
	dp, err := Load(Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dp.Close() })
	spec, err := loadEventgen()
	if err != nil {
		b.Fatal(err)
	}
	var gen eventgenObjects
	if err := spec.LoadAndAssign(&gen, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{"events": dp.objs.Events}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { gen.Close() })
	rd, err := dp.Events()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rd.Close() })

	const batch = 256
	runs := (b.N + batch - 1) / batch
	frame := make([]byte, 64)
	produced := make(chan struct{})
	b.ResetTimer()
	start := time.Now()
	go func() {
		defer close(produced)
		for range runs {
			if _, err := gen.Eventgen.Run(&ebpf.RunOptions{Data: frame}); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	deadline := time.Now().Add(time.Minute)
	read := 0
	var lost uint64
	done := false
	for !done || uint64(read)+lost < uint64(runs*batch) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d events read in a minute (%d lost)", read, runs*batch, lost)
		}
		if !done {
			select {
			case <-produced:
				done = true
				if err := gen.EventgenLost.Get(&lost); err != nil {
					b.Fatal(err)
				}
				continue
			default:
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		ev, err := rd.Read(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			continue
		}
		if err != nil {
			b.Fatalf("after %d events (%d lost): %v", read, lost, err)
		}
		if _, ok := ev.(*Connection); !ok {
			b.Fatalf("event %T, want connections", ev)
		}
		read++
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(read)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(lost), "lost")
}
