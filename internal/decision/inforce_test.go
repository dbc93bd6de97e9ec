package decision

import (
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/fleet"
)

// TestInForceFollowsTheKernel holds the count a scrape reads to what the
// kernel holds, through every kind of change: the count is kept, never
// read from the kernel, so each change must keep it.
func TestInForceFollowsTheKernel(t *testing.T) {
	h := newHarness(t)
	check := func(step string) {
		t.Helper()
		live, _ := h.k.BlockedSources()
		if got := h.s.InForce(); got != live {
			t.Errorf("%s: InForce %d, the kernel holds %d", step, got, live)
		}
	}
	check("empty")
	h.mustBlock("198.51.100.7", time.Hour)
	h.mustBlock("198.51.100.0/28", 0)
	check("two manual blocks")
	h.scan("203.0.113.9/32")
	h.scan("198.51.100.7/32") // already blocked by hand: one prefix
	check("scans")
	a := h.writeList("a.txt", "198.51.100.7\n203.0.113.50\n2001:db8:1::/48\n")
	b := h.writeList("b.txt", "203.0.113.50\n203.0.113.51\n")
	h.setLists(h.list(a), h.list(b))
	check("two lists overlapping each other and a block")
	h.unblock("198.51.100.7")
	check("unblocked, still listed")
	h.writeList("a.txt", "2001:db8:1::/48\n")
	h.setLists(h.list(a), h.list(b))
	check("a list shrunk")
	now := h.clock.Now()
	if _, _, err := h.s.ApplyFleet([]fleet.Applied{
		{Origin: "b", Block: fleet.Block{Prefix: pfx("192.0.2.200/32"), Origin: "scan", Created: now, ExpiresAt: now.Add(time.Minute)}},
		{Origin: "c", Block: fleet.Block{Prefix: pfx("203.0.113.51/32"), Origin: "manual", Created: now}},
	}, nil); err != nil {
		t.Fatal(err)
	}
	check("fleet blocks, one listed")
	h.clock.Add(2 * time.Hour)
	if err := h.s.Sweep(time.Minute); err != nil {
		t.Fatal(err)
	}
	h.reconcile(false)
	check("expired and swept")
	h.k.ScanBlock(pfx("203.0.113.77/32"), h.clock.Now(), h.clock.Now().Add(time.Hour)) // its event lost
	h.reconcile(false)
	check("a lost scan adopted")
	h.reboot(h.list(a), h.list(b))
	check("after a restart")
}
