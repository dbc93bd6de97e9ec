package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/store"
)

// The program reports a scan it blocked while the ring buffer was full as
// a lost event; the daemon then looks in the kernel and finds the block.
func TestLostEventsAreCaughtUpInTheKernel(t *testing.T) {
	h := newHarness(t)
	lost := h.d.catchUpLost(0)
	if lost != 0 {
		t.Fatalf("lost %d with nothing lost", lost)
	}
	h.k.ScanBlock(pfx("198.51.100.66/32"), h.clock.Now(), h.clock.Now().Add(time.Hour))
	h.k.SetCounters(dataplane.Counters{EventsLost: 3})
	if lost = h.d.catchUpLost(lost); lost != 3 {
		t.Errorf("lost count %d, want 3", lost)
	}
	if recs := h.stored("198.51.100.66/32"); len(recs) != 1 || recs[0].Origin != store.OriginScan {
		t.Errorf("the scan behind the lost event: %+v", recs)
	}
	if !strings.Contains(h.log.String(), "events were lost (ring buffer full); reconciling with the kernel") {
		t.Errorf("not logged:\n%s", h.log)
	}
}
