package decision

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/fleet"
)

// BenchmarkFleetChange applies one new block of the fleet with 1,000 and
// with 100,000 of its blocks held here, as the daemon does: the receiver
// decides what changed, and the engine stores and enforces it. The cost
// should follow the change, not the fleet: perfreport compares the two.
// "recheck" is the once-a-second look with nothing changed.
func BenchmarkFleetChange(b *testing.B) {
	for _, held := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			h := newHarness(b)
			view := map[fleet.Ref]fleet.Block{}
			lookup := func(r fleet.Ref) (fleet.Block, bool) { b, ok := view[r]; return b, ok }
			r := fleet.NewReceiver("me", fleet.Limits{MinReporters: 1})
			now := h.clock.Now()
			nth := func(i int) fleet.Ref {
				a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				return fleet.Ref{Origin: fmt.Sprintf("n%d", i%50), Prefix: netip.PrefixFrom(a, 32)}
			}
			add := func(i int) fleet.Ref {
				ref := nth(i)
				view[ref] = fleet.Block{Version: fleet.Version, Prefix: ref.Prefix, Origin: "manual", Reason: "fleet bench",
					Created: now, ExpiresAt: now.Add(time.Hour)}
				return ref
			}
			apply := func(c fleet.Changes) {
				check, gen := h.s.BlockChecker()
				d := r.Update(c, lookup, fleet.Policy{Check: check, Generation: gen}, h.clock.Now())
				if len(d.Apply)+len(d.Remove) == 0 {
					return
				}
				if _, _, err := h.s.ApplyFleet(d.Apply, d.Remove); err != nil {
					b.Fatal(err)
				}
			}
			whole := fleet.Changes{Revision: 1, Whole: true}
			for i := range held {
				whole.Blocks = append(whole.Blocks, add(i))
			}
			apply(whole)
			if got := h.s.FleetEntries(); len(got) != 50 {
				b.Fatalf("%d origins applied, want 50", len(got))
			}
			b.Run("change", func(b *testing.B) {
				i := held
				for b.Loop() {
					apply(fleet.Changes{Revision: 2, Blocks: []fleet.Ref{add(i)}})
					i++
				}
			})
			b.Run("recheck", func(b *testing.B) {
				for b.Loop() {
					apply(fleet.Changes{Revision: 2})
				}
			})
		})
	}
}
