package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
)

// BenchmarkBlockRoundTrip times `hbf block` from the command's start to
// its exit — the block written to the kernel and the store — beside `hbf
// status`, a read that writes nothing, interleaved in the same run: the
// difference is what a block costs beyond starting the client and
// crossing the socket. The daemon holds a 100,000-address list. `true`,
// a process that does nothing, run the same way in the same rounds, is
// the floor of any command a tool starts once per decision, as
// fail2ban's actions do.
func BenchmarkBlockRoundTrip(b *testing.B) {
	const rounds = 200
	lab := newLab(b, netlab.Options{})
	d := startDaemon(b, lab, "--blocklist", writeList(b, 100_000))
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Fatal(err)
	}
	var block, status, nothing []time.Duration
	for range b.N {
		block, status, nothing = block[:0], status[:0], nothing[:0]
		for i := range rounds {
			t0 := time.Now()
			if err := exec.Command(truePath).Run(); err != nil {
				b.Fatal(err)
			}
			nothing = append(nothing, time.Since(t0))
			t0 = time.Now()
			d.mustCLI("block", fmt.Sprintf("198.51.100.%d", i+1), "--for", "1h", "--reason", "bench")
			block = append(block, time.Since(t0))
			t0 = time.Now()
			d.mustCLI("status")
			status = append(status, time.Since(t0))
		}
	}
	if out := d.mustCLI("why", "198.51.100.200"); !strings.Contains(out, "blocked") {
		b.Fatalf("hbf why after the blocks: %s", out)
	}
	b.ReportMetric(quantileMs(block, 0.5), "ms-block-p50")
	b.ReportMetric(quantileMs(block, 0.99), "ms-block-p99")
	b.ReportMetric(quantileMs(status, 0.5), "ms-status-p50")
	b.ReportMetric(quantileMs(status, 0.99), "ms-status-p99")
	b.ReportMetric(quantileMs(block, 0.99)/quantileMs(status, 0.99), "x-status-p99")
	b.ReportMetric(quantileMs(nothing, 0.5), "ms-true-p50")
	b.ReportMetric(quantileMs(nothing, 0.99), "ms-true-p99")
}
