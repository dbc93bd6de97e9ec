package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
)

// BenchmarkTopRefresh runs hbf top in a terminal (tmux) against a daemon
// dropping a flood from a blocked source, with an empty list and with a
// million addresses, and reports the CPU the daemon and hbf top spend per
// refresh: the daemon's over ten refreshes, less what it spends over the
// same time of the flood without a view.
func BenchmarkTopRefresh(b *testing.B) {
	const refreshes = 10
	const interval = time.Second
	million := writeList(b, 1000000)
	empty := filepath.Join(b.TempDir(), "empty.txt")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	perRefresh := map[string][2]time.Duration{}
	for range b.N {
		for _, list := range []string{empty, million} {
			lab := newLab(b, netlab.Options{Peers: []string{"flooder"}})
			flooder := lab.Peers["flooder"]
			d := startDaemon(b, lab, "--blocklist", list)
			d.mustCLI("block", flooder.Addr4.String())
			// A flood that outlasts both windows: some 10,000 packets/s.
			flood := hpingFlood(b, flooder, lab.Host.Addr4.String(), 250000, "u100")
			window := refreshes * interval
			cpu := pidCPU(b, d.cmd.Process.Pid)
			time.Sleep(window)
			without := pidCPU(b, d.cmd.Process.Pid) - cpu

			p := startPane(b, 100, 30)
			p.keys(fmt.Sprintf("%s top --socket %s --interval %s", hbfBin, d.socket(), interval), "Enter")
			p.waitFor("the flooder", 10*time.Second, flooder.Addr4.String()+"/32")
			top := topPID(b, d.socket())
			cpu, topCPU := pidCPU(b, d.cmd.Process.Pid), pidCPU(b, top)
			time.Sleep(window)
			with := pidCPU(b, d.cmd.Process.Pid) - cpu
			topCPU = pidCPU(b, top) - topCPU
			p.keys("q")
			flood()
			name := "empty"
			if list == million {
				name = "1M"
			}
			perRefresh[name] = [2]time.Duration{max(with-without, 0) / refreshes, topCPU / refreshes}
			d.stop()
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(perRefresh["empty"][0]), "ms-daemon-per-refresh-empty")
	b.ReportMetric(ms(perRefresh["1M"][0]), "ms-daemon-per-refresh-1M")
	b.ReportMetric(float64(perRefresh["1M"][0])/float64(max(perRefresh["empty"][0], time.Microsecond)), "x-1M-vs-empty")
	b.ReportMetric(ms(perRefresh["empty"][1]), "ms-top-per-refresh-empty")
	b.ReportMetric(ms(perRefresh["1M"][1]), "ms-top-per-refresh-1M")
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
