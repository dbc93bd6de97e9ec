package dataplane

import (
	"time"

	"golang.org/x/sys/unix"
)

// The program stamps times with bpf_ktime_get_coarse_ns, CLOCK_MONOTONIC.
// Rules keep their expiry in that clock so the kernel can honour it alone;
// these convert at the edge.

func monoNow() uint64 {
	var ts unix.Timespec
	// CLOCK_MONOTONIC cannot fail on Linux.
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// toMono converts a wall-clock time to the program's clock; the zero time,
// meaning "never", stays 0.
func toMono(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	d := time.Until(t)
	now := monoNow()
	if d >= 0 {
		return now + uint64(d)
	}
	if past := uint64(-d); past < now {
		return now - past
	}
	return 1 // long past; 0 would mean "never expires"
}

// toWall converts a time of the program's clock to wall-clock time; 0 stays
// the zero time.
func toWall(mono uint64) time.Time {
	if mono == 0 {
		return time.Time{}
	}
	now := monoNow()
	return time.Now().Add(-time.Duration(int64(now - mono)))
}
