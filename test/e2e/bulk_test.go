package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
)

// peakRSS reads a process's peak resident memory, in MiB.
func peakRSS(tb testing.TB, pid int) float64 {
	tb.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(status)
	if m == nil {
		tb.Fatalf("no VmHWM in /proc/%d/status", pid)
	}
	kb, _ := strconv.Atoi(string(m[1]))
	return float64(kb) / 1024
}

// writeList writes n distinct addresses, one per line, outside the lab's
// prefixes.
func writeList(tb testing.TB, n int) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "million.txt")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range n {
		fmt.Fprintf(w, "10.%d.%d.%d\n", i>>16&0xff, i>>8&0xff, i&0xff)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	f.Close()
	return path
}

// loadTimes reads the daemon's log: from its start to the kernel in step
// (reading, parsing and applying the list), and the kernel writes alone.
func loadTimes(tb testing.TB, d *daemonProc) (apply, write time.Duration) {
	tb.Helper()
	text := d.stderrText()
	start := regexp.MustCompile(`time=(\S+) level=INFO msg=starting`).FindStringSubmatch(text)
	done := regexp.MustCompile(`time=(\S+) level=INFO msg="kernel in step with the store" written=\d+ .* took=(\S+)`).FindStringSubmatch(text)
	if start == nil || done == nil {
		tb.Fatalf("no load lines:\n%s", text)
	}
	t0, err1 := time.Parse(time.RFC3339Nano, start[1])
	t1, err2 := time.Parse(time.RFC3339Nano, done[1])
	write, err3 := time.ParseDuration(done[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		tb.Fatal(err)
	}
	return t1.Sub(t0), write
}

// BenchmarkBlocklistLoad starts the daemon with a blocklist of a million
// addresses, beside one with an empty list measured in the same run, and
// reports the time to put them in the kernel and the daemon's peak memory.
// Goal on the 2-core VM: < 1 s and < 64 MiB.
func BenchmarkBlocklistLoad(b *testing.B) {
	const n = 1000000
	list := writeList(b, n)
	empty := filepath.Join(b.TempDir(), "empty.txt")
	os.WriteFile(empty, nil, 0o600)
	var apply, write time.Duration
	var rss, baseRSS float64
	for range b.N {
		lab := newLab(b, netlab.Options{})
		base := startDaemon(b, lab, "--blocklist", empty)
		baseRSS = peakRSS(b, base.cmd.Process.Pid)
		base.stop()

		d := startDaemon(b, lab, "--blocklist", list)
		apply, write = loadTimes(b, d)
		rss = peakRSS(b, d.cmd.Process.Pid)
		if !strings.Contains(d.stderrText(), fmt.Sprintf("entries=%d", n)) {
			b.Fatalf("the list did not load whole:\n%s", d.stderrText())
		}
		d.stop()
	}
	b.ReportMetric(apply.Seconds(), "s-start-to-applied")
	b.ReportMetric(write.Seconds(), "s-kernel-writes")
	b.ReportMetric(rss, "MiB-peak-rss")
	b.ReportMetric(baseRSS, "MiB-peak-rss-empty-list")
}
