package dataplane

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The program stamps times with bpf_ktime_get_coarse_ns, CLOCK_MONOTONIC.
// Rules keep their expiry in that clock so the kernel can honour it alone;
// a clockRef, one reading of both clocks, converts at the edge.
type clockRef struct {
	wall time.Time
	mono uint64
}

// CLOCK_MONOTONIC is read through the system call once; after that, from
// Go's monotonic clock, which is CLOCK_MONOTONIC too and read without a
// system call: the reader converts a million event times a second.
var monoBase, monoBaseTime = monoSyscall(), time.Now()

func monoSyscall() uint64 {
	var ts unix.Timespec
	// CLOCK_MONOTONIC cannot fail on Linux.
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

func monoNow() uint64 { return monoBase + uint64(time.Since(monoBaseTime)) }

// clock is the program's clock as this package reads it: CLOCK_MONOTONIC
// plus the offset the program adds to every reading (hbf_clock_offset).
// The offset is 0 but in tests, which move it forward instead of sleeping
// through a window or an expiry.
type clock struct{ offset atomic.Uint64 }

func (c *clock) mono() uint64 { return monoNow() + c.offset.Load() }

func (c *clock) ref() clockRef {
	mono := c.mono()
	return clockRef{wall: time.Now(), mono: mono}
}

// toMono converts a wall-clock time to the program's clock; the zero time,
// meaning "never", stays 0.
func (c clockRef) toMono(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	d := t.Sub(c.wall)
	if d >= 0 {
		return c.mono + uint64(d)
	}
	if past := uint64(-d); past < c.mono {
		return c.mono - past
	}
	return 1 // long past; 0 would mean "never expires"
}

// toWall converts a time of the program's clock to wall-clock time; 0 stays
// the zero time.
func (c clockRef) toWall(mono uint64) time.Time {
	if mono == 0 {
		return time.Time{}
	}
	return c.wall.Add(time.Duration(int64(mono - c.mono)))
}
