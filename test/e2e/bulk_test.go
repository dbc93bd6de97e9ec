package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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

// writeSets writes the same n addresses as writeList does, as an nftables
// ruleset of one set and as an ipset restore file.
func writeSets(tb testing.TB, n int) (nft, ipset string) {
	tb.Helper()
	dir := tb.TempDir()
	nft, ipset = filepath.Join(dir, "set.nft"), filepath.Join(dir, "set.ipset")
	fn, err1 := os.Create(nft)
	fi, err2 := os.Create(ipset)
	if err := errors.Join(err1, err2); err != nil {
		tb.Fatal(err)
	}
	wn, wi := bufio.NewWriter(fn), bufio.NewWriter(fi)
	fmt.Fprintf(wn, "table inet hbfbench {\n set s { type ipv4_addr; size %d; elements = {\n", 2*n)
	fmt.Fprintf(wi, "create hbfbench hash:ip family inet maxelem %d hashsize %d\n", 2*n, n)
	for i := range n {
		a := fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
		sep := ",\n"
		if i == n-1 {
			sep = "\n"
		}
		wn.WriteString(a + sep)
		fmt.Fprintf(wi, "add hbfbench %s\n", a)
	}
	wn.WriteString("} }\n}\n")
	if err := errors.Join(wn.Flush(), wi.Flush(), fn.Close(), fi.Close()); err != nil {
		tb.Fatal(err)
	}
	return nft, ipset
}

// timed runs a command in ns and returns how long it took.
func timed(tb testing.TB, ns *netlab.NS, name string, args ...string) time.Duration {
	tb.Helper()
	began := time.Now()
	if out, err := ns.Run(context.Background(), name, args...); err != nil {
		tb.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return time.Since(began)
}

// nftListeners counts the sockets of the whole machine subscribed to
// nftables' change notifications (NFNLGRP_NFTABLES): the kernel writes a
// notification per set element while any is open, in any namespace.
func nftListeners(tb testing.TB) int {
	tb.Helper()
	b, err := os.ReadFile("/proc/net/netlink")
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 4 || f[1] != "12" { // NETLINK_NETFILTER
			continue
		}
		if groups, err := strconv.ParseUint(f[3], 16, 32); err == nil && groups&(1<<(7-1)) != 0 {
			n++
		}
	}
	return n
}

// metricValue reads an unlabelled metric from an exposition.
func metricValue(tb testing.TB, exposition, name string) float64 {
	tb.Helper()
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(exposition)
	if m == nil {
		tb.Fatalf("no %s in the exposition", name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// scrapeTime is the median of ten scrapes of the daemon's /metrics.
func scrapeTime(tb testing.TB, d *daemonProc) time.Duration {
	tb.Helper()
	var ds []time.Duration
	for range 10 {
		began := time.Now()
		d.metrics()
		ds = append(ds, time.Since(began))
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// BenchmarkBlocklistLoad starts the daemon with a blocklist of a million
// addresses, beside the same addresses loaded by nft -f into one set and
// by ipset restore, and a daemon with an empty list, all in the same run:
// the time from the daemon's exec to the list enforced ("hbf is running"),
// the daemon's peak memory, and a metrics scrape with each list. The tools
// run before any hbf does, so that nothing of hbf's weighs on them.
func BenchmarkBlocklistLoad(b *testing.B) {
	const n = 1000000
	list := writeList(b, n)
	nftSet, ipsetSet := writeSets(b, n)
	empty := filepath.Join(b.TempDir(), "empty.txt")
	os.WriteFile(empty, nil, 0o600)
	running := regexp.MustCompile(`time=(\S+) level=INFO msg="hbf is running"`)
	var nft, ipset, enforced, apply, write, scrape, baseScrape time.Duration
	var rss, baseRSS float64
	for range b.N {
		lab := newLab(b, netlab.Options{})
		nft = timed(b, lab.Host, "nft", "-f", nftSet)
		timed(b, lab.Host, "nft", "delete", "table", "inet", "hbfbench")
		ipset = timed(b, lab.Host, "ipset", "restore", "-f", ipsetSet)
		timed(b, lab.Host, "ipset", "destroy", "hbfbench")

		base := startDaemon(b, lab, "--blocklist", empty)
		baseRSS = peakRSS(b, base.cmd.Process.Pid)
		baseScrape = scrapeTime(b, base)
		base.stop()

		began := time.Now()
		d := startDaemon(b, lab, "--blocklist", list)
		at, err := time.Parse(time.RFC3339Nano, d.waitLog(running)[1])
		if err != nil {
			b.Fatal(err)
		}
		enforced = at.Sub(began)
		apply, write = loadTimes(b, d)
		rss = peakRSS(b, d.cmd.Process.Pid)
		if !strings.Contains(d.stderrText(), fmt.Sprintf("entries=%d", n)) {
			b.Fatalf("the list did not load whole:\n%s", d.stderrText())
		}
		if got := metricValue(b, d.metrics(), "hbf_blocked_sources"); got != n {
			b.Fatalf("hbf_blocked_sources is %v, want %d", got, n)
		}
		scrape = scrapeTime(b, d)
		d.stop()
	}
	b.ReportMetric(enforced.Seconds(), "s-exec-to-enforced")
	b.ReportMetric(nft.Seconds(), "s-nft")
	b.ReportMetric(ipset.Seconds(), "s-ipset")
	b.ReportMetric(enforced.Seconds()/min(nft, ipset).Seconds(), "x-faster-tool")
	b.ReportMetric(apply.Seconds(), "s-start-to-applied")
	b.ReportMetric(write.Seconds(), "s-kernel-writes")
	b.ReportMetric(rss, "MiB-peak-rss")
	b.ReportMetric(baseRSS, "MiB-peak-rss-empty-list")
	b.ReportMetric(float64(scrape.Microseconds())/1000, "ms-scrape")
	b.ReportMetric(float64(baseScrape.Microseconds())/1000, "ms-scrape-empty-list")
	b.ReportMetric(scrape.Seconds()/baseScrape.Seconds(), "x-scrape-empty")
}

// BenchmarkNftBesideHBF loads a set of a million addresses with nft -f
// without hbf and with an hbf daemon running, holding a million-address
// list, in the same run: hbf must not tax other tools' set loads. The
// baseline needs no other nftables listener on the machine, whose count
// the kernel shares between every namespace.
func BenchmarkNftBesideHBF(b *testing.B) {
	const n = 1000000
	list := writeList(b, n)
	nftSet, _ := writeSets(b, n)
	var without, with []time.Duration
	listeners := 0
	for range b.N {
		lab := newLab(b, netlab.Options{})
		load := func() time.Duration {
			took := timed(b, lab.Host, "nft", "-f", nftSet)
			timed(b, lab.Host, "nft", "delete", "table", "inet", "hbfbench")
			return took
		}
		for range 2 {
			if l := nftListeners(b); l > 0 {
				b.Fatalf("%d nftables listeners are open on this machine (/proc/net/netlink): "+
					"each taxes every set load, the baseline's too; stop them (nft monitor, firewalld ...)", l)
			}
			without = append(without, load())
			d := startDaemon(b, lab, "--blocklist", list)
			listeners = nftListeners(b)
			with = append(with, load())
			d.stop()
		}
	}
	seconds := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return ds[len(ds)/2].Seconds()
	}
	b.ReportMetric(seconds(without), "s-nft-without-hbf")
	b.ReportMetric(seconds(with), "s-nft-with-hbf")
	b.ReportMetric(seconds(with)/seconds(without), "x-without-hbf")
	b.ReportMetric(float64(listeners), "nft-listeners-with-hbf")
}
