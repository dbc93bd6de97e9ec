package main

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fixture(t *testing.T) *results {
	t.Helper()
	f, err := os.Open("testdata/bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := readResults(f, "bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReadResultsTakesMediansByName(t *testing.T) {
	r := fixture(t)
	for _, c := range []struct {
		bench, unit string
		want        float64
	}{
		{"Versus/blocked-IPv4", "hbf-ns", 22}, // the median of three runs
		{"Versus/blocked-IPv4-in-/15", "x-filter", 0.7241},
		{"DropCost", "hbf-xdp-ns/pkt", 400},
	} {
		if got, ok := r.get(c.bench, c.unit); !ok || got != c.want {
			t.Errorf("%s %s: %v (found %v), want %v", c.bench, c.unit, got, ok, c.want)
		}
	}
	if r.config["cpu"] != "AMD EPYC" {
		t.Errorf("cpu %q", r.config["cpu"])
	}
}

func TestReportJudgesEveryGoal(t *testing.T) {
	md, charts := render(fixture(t), machine{date: "2026-12-06", commit: "abc", cpu: "AMD EPYC", cores: 2, kernel: "6.18"})
	row := func(label string) string {
		for _, l := range strings.Split(md, "\n") {
			if strings.HasPrefix(l, "| "+label+" |") {
				return l
			}
		}
		t.Fatalf("no row %q in:\n%s", label, md)
		return ""
	}
	for label, want := range map[string][]string{
		"established ACK, IPv4":                 {"| 14 | 19 | 29 | 5 | 0.74 | 0.48 | 0.64 |", "≤ 1.15× ref ✓", "≤ 0.67× xdp-filter ✓"},
		"blocked IPv4 address":                  {"| 22 |", "≤ 0.67× xdp-filter **missed**"},
		"IPv4 address in a blocked /15":         {"≤ 0.77× xdp-filter ✓"},
		"established ACK, IPv6":                 {"| – | – |", "≤ 1.15× ref: not measured"},
		"hbf, XDP":                              {"| 400 | 0.80 |"},
		"hbf, TCX":                              {"| 350 | 0.70 |"},
		"nftables, netdev ingress":              {"| 500 | 1.00 |"},
		"light traffic":                         {"| 0.72 / 1.56 | 10.6 / 19.7 |", "≤ 25 ms (the 20 ms poll + 5) ✓"},
		"daemon CPU per event during the flood": {"| 16.0 µs | 16.1 µs |", "✓"},
		"ACK, 65,536 sources among 10,000 /24s": {"| 601 | 708 | 0.85 |", "≤ 1× ✓"},
		"exec to a 1M list enforced, against the faster of `nft -f` and `ipset restore`": {"0.78 s; nft 3.49 s, ipset 3.28 s: 0.24×", "≤ 0.5× ✓"},
		"`nft -f` of a 1M set with hbf running, against without":                         {"0.95×", "listeners while hbf runs: 0", "≤ 1.2× ✓"},
		"one scrape with the 1M list, against an empty one":                              {"2.06 ms against 1.96 ms: 1.05×", "≤ 2× ✓"},
		"one fleet change with 100,000 fleet blocks held, against 1,000":                 {"791 µs against 669 µs: 1.18×", "nothing changed 0.16 µs", "≤ 2× ✓"},
		"250, grpc-proxy": {"| 28 ms | 606 ms | 0.03 s |", "3.10 µs", "p99 < 1 s ✓"},
		"100, grpc-proxy": {"| 12 ms | 38 ms | 0.01 s |", "13.1 µs", "CPU ≤ 8.3 µs (a third of the 25 µs measured before deltas) **missed**"},
	} {
		got := row(label)
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("row %q lacks %q:\n%s", label, w, got)
			}
		}
	}
	for _, w := range []string{
		"IPv4 no slower than IPv6: established ACK not measured; blocked address 22 ns against 30 ns ✓",
		"against the cheaper of iptables and nftables: the cheapest, ≤ 1× ✓ (0.70)",
		"(median 40000 packets/s)",
		"commit `abc`: AMD EPYC, 2 CPUs, Linux 6.18",
		"![Per-packet cost of hbf, the semantic reference and xdp-filter](img/performance-versus.svg)",
	} {
		if !strings.Contains(md, w) {
			t.Errorf("the report lacks %q", w)
		}
	}
	for path, svg := range charts {
		if err := wellFormed(svg); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
	// Four measured rows of BenchmarkVersus, four programs each.
	if n := strings.Count(charts[versusChart], "<rect x="); n != 4*4+4 {
		t.Errorf("the versus chart has %d bars and legend boxes, want %d", n, 4*4+4)
	}
}

func wellFormed(s string) error {
	dec := xml.NewDecoder(strings.NewReader(s))
	for {
		if _, err := dec.Token(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func TestRunWritesTheDocumentAndCharts(t *testing.T) {
	dir := t.TempDir()
	if err := run(dir, "abc", []string{"testdata/bench.txt"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"performance.md", versusChart, dropChart} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
}

func TestRunRefusesNoResults(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.txt")
	os.WriteFile(empty, []byte("PASS\nok  \tx\t0.1s\n"), 0o600)
	err := run(t.TempDir(), "abc", []string{empty})
	if err == nil || !strings.Contains(err.Error(), "no benchmark results") {
		t.Errorf("got %v", err)
	}
}
