package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/netlab"
)

// BenchmarkTopRefresh measures a refresh of hbf top against a daemon
// dropping a flood from a blocked source, with an empty list and with a
// million addresses. The daemon's part: its CPU over 200 refreshes' API
// calls (status, then the busiest sources) made back to back, so its own
// background work weighs little; the median of three rounds. hbf top's
// part: its CPU in a terminal (tmux) over ten refreshes a second apart.
// The first look, which walks every block once, is timed apart.
func BenchmarkTopRefresh(b *testing.B) {
	const calls, rounds, refreshes = 200, 3, 10
	const interval = time.Second
	million := writeList(b, 1000000)
	empty := filepath.Join(b.TempDir(), "empty.txt")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	daemonCPU, topCPU, firstLook := map[string]time.Duration{}, map[string]time.Duration{}, map[string]time.Duration{}
	for range b.N {
		for _, list := range []string{empty, million} {
			name := "empty"
			if list == million {
				name = "1M"
			}
			lab := newLab(b, netlab.Options{Peers: []string{"flooder"}})
			flooder := lab.Peers["flooder"]
			d := startDaemon(b, lab, "--blocklist", list)
			d.mustCLI("block", flooder.Addr4.String())
			// Some 10,000 packets/s, for longer than the measures take.
			flood := hpingFlood(b, flooder, lab.Host.Addr4.String(), 200000, "u100")
			c := api.NewClient(d.socket())
			ctx := context.Background()
			// The first look walks every block once.
			began := time.Now()
			if _, err := c.Top(ctx, api.DefaultTopSources); err != nil {
				b.Fatal(err)
			}
			firstLook[name] = time.Since(began)
			for deadline := time.Now().Add(10 * time.Second); ; {
				top, err := c.Top(ctx, api.DefaultTopSources)
				if err == nil && len(top.Sources) > 0 && top.Sources[0].Prefix.Addr() == flooder.Addr4 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("the flooder is not among the busiest sources: %+v, %v", top, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			var per []time.Duration
			for range rounds {
				cpu := pidCPU(b, d.cmd.Process.Pid)
				for range calls {
					if _, err := c.Status(ctx); err != nil {
						b.Fatal(err)
					}
					if _, err := c.Top(ctx, api.DefaultTopSources); err != nil {
						b.Fatal(err)
					}
				}
				per = append(per, (pidCPU(b, d.cmd.Process.Pid)-cpu)/calls)
			}
			slices.Sort(per)
			daemonCPU[name] = per[rounds/2]

			p := startPane(b, 100, 30)
			p.keys(fmt.Sprintf("%s top --socket %s --interval %s", hbfBin, d.socket(), interval), "Enter")
			p.waitFor("the flooder", 10*time.Second, flooder.Addr4.String()+"/32")
			top := topPID(b, d.socket())
			cpu := pidCPU(b, top)
			time.Sleep(refreshes * interval)
			topCPU[name] = (pidCPU(b, top) - cpu) / refreshes
			p.keys("q")
			flood()
			d.stop()
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(daemonCPU["empty"]), "ms-daemon-per-refresh-empty")
	b.ReportMetric(ms(daemonCPU["1M"]), "ms-daemon-per-refresh-1M")
	b.ReportMetric(float64(daemonCPU["1M"])/float64(max(daemonCPU["empty"], time.Microsecond)), "x-1M-vs-empty")
	b.ReportMetric(ms(topCPU["empty"]), "ms-top-per-refresh-empty")
	b.ReportMetric(ms(topCPU["1M"]), "ms-top-per-refresh-1M")
	b.ReportMetric(ms(firstLook["empty"]), "ms-first-look-empty")
	b.ReportMetric(ms(firstLook["1M"]), "ms-first-look-1M")
}

// topPID is the pid of the hbf top reading socket.
func topPID(tb testing.TB, socket string) int {
	tb.Helper()
	out, err := exec.Command("pgrep", "-f", "top --socket "+socket).Output()
	if err != nil {
		tb.Fatalf("hbf top's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(out))[0])
	if err != nil {
		tb.Fatal(err)
	}
	return pid
}
