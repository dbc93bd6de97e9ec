package daemon

import (
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
)

// hbf top's first look has the kernel note busy blocks; from then on the
// blocks that drop show, busiest first, with what blocks them, a block
// only the kernel holds yet by its kernel origin. Once no view has asked
// for a while, the kernel stops noting.
func TestTopFollowsTheBlocksTheKernelNotes(t *testing.T) {
	h := newHarness(t)
	h.s.Block(root, []string{"192.0.2.7", "203.0.113.0/24"}, time.Hour, "by hand", false)
	now := h.clock.Now()
	h.k.ScanBlock(pfx("198.51.100.9/32"), now, now.Add(time.Hour))

	h.k.Drop(pfx("192.0.2.7/32"), 5) // before any view: found by the first look's walk
	top, err := h.d.top(10, h.clock.Now())
	if err != nil || len(top.Sources) != 1 || top.Sources[0].Packets != 5 || !h.k.WatchingHot() {
		t.Fatalf("first look: %+v, %v, watching %v; want the block busy before, and the kernel noting", top, err, h.k.WatchingHot())
	}
	h.k.Drop(pfx("192.0.2.7/32"), 10)
	h.k.Drop(pfx("203.0.113.0/24"), 100)
	h.k.Drop(pfx("198.51.100.9/32"), 1)
	h.clock.Add(time.Second)
	h.d.top(10, h.clock.Now())
	h.k.Drop(pfx("203.0.113.0/24"), 1000)
	h.k.Drop(pfx("192.0.2.7/32"), 2)
	h.clock.Add(time.Second)
	top, err = h.d.top(10, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []api.TopSource{
		{Prefix: pfx("203.0.113.0/24"), Origins: []string{"manual"}, Reason: "by hand", Packets: 1100, Rate: 1000},
		{Prefix: pfx("192.0.2.7/32"), Origins: []string{"manual"}, Reason: "by hand", Packets: 17, Rate: 2},
		{Prefix: pfx("198.51.100.9/32"), Origins: []string{"scan"}, Packets: 1},
	}
	if len(top.Sources) != len(want) || top.Followed != 3 {
		t.Fatalf("sources %+v (%d followed), want %+v", top.Sources, top.Followed, want)
	}
	for i, w := range want {
		g := top.Sources[i]
		if g.Prefix != w.Prefix || g.Packets != w.Packets || g.Rate != w.Rate || g.Origins[0] != w.Origins[0] || g.Reason != w.Reason {
			t.Errorf("source %d: %+v, want %+v", i, g, w)
		}
	}
	if top, _ := h.d.top(1, h.clock.Now()); len(top.Sources) != 1 {
		t.Errorf("asked for 1, got %d", len(top.Sources))
	}

	h.d.unwatchIfIdle(h.clock.Now().Add(topIdle / 2))
	if !h.k.WatchingHot() {
		t.Error("the kernel stopped noting while a view still asks")
	}
	h.d.unwatchIfIdle(h.clock.Now().Add(topIdle + time.Second))
	if h.k.WatchingHot() {
		t.Error("the kernel still notes with no view for longer than", topIdle)
	}
}
