package decision

import (
	"net/netip"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/store"
)

// BenchmarkApplyCrowdSec applies a snapshot of 100,000 decisions, as a
// cscli decisions import of that many reaches hbf in one read, and
// reports how long they took to reach the kernel (a fake one here).
func BenchmarkApplyCrowdSec(b *testing.B) {
	var enforced time.Duration
	for range b.N {
		b.StopTimer()
		h := newHarness(b)
		now := h.clock.Now()
		put := make([]store.Block, 100000)
		for i := range put {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			put[i] = store.Block{Prefix: netip.PrefixFrom(a, 32), Origin: store.OriginCrowdSec("cscli-import"),
				Reason: "import", By: "crowdsec", Created: now, Expires: now.Add(4 * time.Hour)}
		}
		b.StartTimer()
		start := time.Now()
		a, err := h.s.ApplyCrowdSec(put, nil, true)
		if err != nil {
			b.Fatal(err)
		}
		enforced += a.Enforced.Sub(start)
	}
	b.ReportMetric(enforced.Seconds()/float64(b.N), "s-to-kernel")
}
