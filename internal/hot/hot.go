// Package hot follows the busiest blocks the kernel drops packets for,
// from the notes the program makes as their drop counts reach marks
// (bpf/hot.h): a live view finds them without walking a million blocks
// each refresh, and follows only those it was told of, by their counters.
package hot

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// DefaultMax bounds the blocks followed: those dropping least go first.
const DefaultMax = 1024

// idleAfter is how long a block that drops nothing stays followed.
const idleAfter = 5 * time.Minute

// Note is a block the kernel noted, with its drop count then.
type Note struct {
	Prefix  netip.Prefix
	Packets uint64
}

// Source is a followed block as a sample found it.
type Source struct {
	Prefix  netip.Prefix
	Packets uint64  // dropped since the block was made
	Rate    float64 // packets/s since the sample before
}

type followed struct {
	packets uint64
	at      time.Time // of the last sample
	rate    float64
	busy    time.Time // the last sample it dropped in
}

// Follower keeps the blocks the kernel noted, and their rates.
type Follower struct {
	Max  int // 0: DefaultMax
	seen map[netip.Prefix]*followed
}

// Sample takes the notes since the last sample, reads every followed
// block's count (count: false when the block is gone), and returns them,
// busiest first.
func (f *Follower) Sample(now time.Time, notes []Note, count func(netip.Prefix) (uint64, bool)) []Source {
	if f.seen == nil {
		f.seen = map[netip.Prefix]*followed{}
	}
	for _, n := range notes {
		if _, ok := f.seen[n.Prefix]; !ok {
			// New: its rate shows from the next sample, its count now.
			f.seen[n.Prefix] = &followed{packets: n.Packets, at: now, busy: now}
		}
	}
	out := make([]Source, 0, len(f.seen))
	for p, s := range f.seen {
		packets, ok := count(p)
		if !ok {
			delete(f.seen, p)
			continue
		}
		if dt := now.Sub(s.at).Seconds(); dt > 0 {
			// A block made again starts from zero: no negative rate.
			s.rate = float64(packets-min(s.packets, packets)) / dt
		}
		if packets > s.packets {
			s.busy = now
		}
		if now.Sub(s.busy) > idleAfter {
			delete(f.seen, p)
			continue
		}
		s.packets, s.at = packets, now
		out = append(out, Source{Prefix: p, Packets: packets, Rate: s.rate})
	}
	slices.SortFunc(out, func(a, b Source) int {
		return cmp.Or(cmp.Compare(b.Rate, a.Rate), cmp.Compare(b.Packets, a.Packets),
			a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
	keep := min(cmp.Or(f.Max, DefaultMax), len(out))
	for _, s := range out[keep:] {
		delete(f.seen, s.Prefix)
	}
	return out[:keep]
}

// Followed is how many blocks the follower follows.
func (f *Follower) Followed() int { return len(f.seen) }

// Reset forgets every block: the view is gone.
func (f *Follower) Reset() { f.seen = nil }
