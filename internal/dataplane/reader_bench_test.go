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
// a generator program (bpf/testdata/eventgen.c) fills hbf's ring as fast as one CPU
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
	// The reader runs as the daemon's does, on one long-lived context,
	// which ends once the generator is done: what is left is then polled.
	ctx, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	b.ResetTimer()
	start := time.Now()
	go func() {
		defer stop()
		for range runs {
			if _, err := gen.Eventgen.Run(&ebpf.RunOptions{Data: frame}); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	read := 0
	count := func(ev Event) {
		if _, ok := ev.(*Connection); !ok {
			b.Fatalf("event %T, want connections", ev)
		}
		read++
	}
	for {
		ev, err := rd.Read(ctx)
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			b.Fatalf("after %d events: %v", read, err)
		}
		count(ev)
	}
	for {
		ev, err := rd.Poll()
		if err != nil {
			b.Fatal(err)
		}
		if ev == nil {
			break
		}
		count(ev)
	}
	var lost uint64
	if err := gen.EventgenLost.Get(&lost); err != nil {
		b.Fatal(err)
	}
	if uint64(read)+lost != uint64(runs*batch) {
		b.Fatalf("%d events read and %d lost of %d generated", read, lost, runs*batch)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(read)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(lost), "lost")
}
