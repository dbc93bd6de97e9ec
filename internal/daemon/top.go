package daemon

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/hot"
)

// topIdle is how long the kernel notes hot blocks after the last view
// asked: a few refreshes missed, and the drop path pays nothing again.
const topIdle = 30 * time.Second

// topView finds the busiest blocks for hbf top: the kernel notes blocks
// at marks of their drop counts while a view asks, and the follower reads
// the counters of those alone.
type topView struct {
	mu       sync.Mutex
	follower hot.Follower
	watching bool
	asked    time.Time
}

// top answers a view at now: the busiest n blocks, with what blocks them.
func (d *daemon) top(n int, now time.Time) (api.Top, error) {
	t := &d.hot
	t.mu.Lock()
	defer t.mu.Unlock()
	t.asked = now
	var notes []hot.Note
	if !t.watching {
		if err := d.k.WatchHot(true); err != nil {
			return api.Top{}, err
		}
		t.watching = true
		seed, err := d.busiestSoFar(now)
		if err != nil {
			return api.Top{}, err
		}
		notes = seed
	}
	drained, err := d.k.DrainHot()
	if err != nil {
		return api.Top{}, err
	}
	for _, h := range drained {
		notes = append(notes, hot.Note{Prefix: h.Prefix, Packets: h.Packets})
	}
	count := func(p netip.Prefix) (uint64, bool) {
		r, ok, err := d.k.LookupBlock(p)
		return r.Packets, ok && err == nil && !r.Expired(now)
	}
	out := api.Top{Time: now, Sources: []api.TopSource{}}
	for _, s := range t.follower.Sample(now, notes, count) {
		if len(out.Sources) == n {
			break
		}
		origins, reason, expires := d.state.Describe(s.Prefix)
		if len(origins) == 0 {
			origins = []string{kernelOrigin(s.Prefix, d.k)} // the program's, not yet recorded
		}
		out.Sources = append(out.Sources, api.TopSource{Prefix: s.Prefix, Origins: origins, Reason: reason,
			Expires: expires, Packets: s.Packets, Rate: s.Rate})
	}
	out.Followed = t.follower.Followed()
	return out, nil
}

// busiestSoFar are the blocks that dropped the most so far, as many as
// the follower follows: a view that attaches shows at once the sources
// that were busy before it, which the kernel notes again only at their
// next 1024th drop. One walk of every block, when a view attaches, never
// at a refresh.
func (d *daemon) busiestSoFar(now time.Time) ([]hot.Note, error) {
	var notes []hot.Note
	err := d.k.EachBlock(func(r dataplane.Rule) error {
		if r.Packets > 0 && !r.Expired(now) {
			notes = append(notes, hot.Note{Prefix: r.Prefix, Packets: r.Packets})
			if len(notes) >= 2*hot.DefaultMax {
				notes = busiest(notes, hot.DefaultMax)
			}
		}
		return nil
	})
	return busiest(notes, hot.DefaultMax), err
}

// busiest keeps the n notes of the most packets.
func busiest(notes []hot.Note, n int) []hot.Note {
	slices.SortFunc(notes, func(a, b hot.Note) int { return cmp.Compare(b.Packets, a.Packets) })
	return notes[:min(n, len(notes))]
}

// kernelOrigin is the origin of a block only the kernel holds: one the
// program made, whose event the daemon has not read yet.
func kernelOrigin(p netip.Prefix, k kernel) string {
	if r, ok, _ := k.LookupBlock(p); ok && r.Origin != dataplane.OriginOperator {
		return r.Origin.String()
	}
	return "kernel"
}

// unwatchIdle stops the kernel's noting once no view has asked for a
// while, until ctx ends.
func (d *daemon) unwatchIdle(ctx context.Context) {
	tick := time.NewTicker(topIdle / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			d.unwatchIfIdle(now)
		}
	}
}

// unwatchIfIdle stops the kernel's noting when no view asked for topIdle
// before now, and forgets the blocks followed.
func (d *daemon) unwatchIfIdle(now time.Time) {
	t := &d.hot
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.watching || now.Sub(t.asked) <= topIdle {
		return
	}
	if err := d.k.WatchHot(false); err != nil {
		d.log.Warn("cannot stop noting hot blocks", "err", err)
		return
	}
	t.watching = false
	t.follower.Reset()
}

func (s *service) Top(_ context.Context, n int) (api.Top, error) {
	top, err := s.d.top(n, time.Now())
	if err != nil {
		return api.Top{}, fmt.Errorf("the busiest sources: %w", err)
	}
	return top, nil
}
