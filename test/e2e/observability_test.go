package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/crowdsectest"
	"github.com/hbf-firewall/hbf/internal/etcdtest"
	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// dashboard is what the test reads of deploy/grafana/hbf.json.
type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr         string `json:"expr"`
			LegendFormat string `json:"legendFormat"`
		} `json:"targets"`
	} `json:"panels"`
}

// grafanaExpr turns a panel's query into one Prometheus runs: the
// dashboard's variables take the values Grafana would give them here.
func grafanaExpr(expr string) string {
	return strings.NewReplacer(`$__rate_interval`, `15s`, `$job`, `hbf`, `$instance`, `.*`).Replace(expr)
}

type promSeries struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
	Values [][]any           `json:"values"`
}

// promQuery runs a query against the Prometheus API in ns.
func promQuery(t *testing.T, ns *netlab.NS, path string, params url.Values) []promSeries {
	t.Helper()
	resp, err := ns.HTTPClient().Get("http://127.0.0.1:9090/api/v1/" + path + "?" + params.Encode())
	if err != nil {
		t.Fatalf("prometheus %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promSeries `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("prometheus %s: %v", path, err)
	}
	if body.Status != "success" {
		t.Fatalf("prometheus %s %v: %s", path, params, body.Error)
	}
	return body.Data.Result
}

// startPrometheus runs Debian's Prometheus in ns, scraping hbf every second
// with the alert rules of deploy/prometheus loaded.
func startPrometheus(t *testing.T, ns *netlab.NS) {
	t.Helper()
	testenv.RequireCommand(t, "prometheus")
	dir := t.TempDir()
	rules, err := filepath.Abs("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: hbf
    static_configs: [{targets: ["127.0.0.1:9717"]}]
`, rules)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, "prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address=127.0.0.1:9090")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", out.String())
		}
	})
	eventually(t, "prometheus ready", func() bool {
		resp, err := ns.HTTPClient().Get("http://127.0.0.1:9090/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// A real Prometheus scrapes a real hbf in a lab while clients connect, a
// blocked source sends, a scanner scans, another node of its fleet
// publishes a block and CrowdSec's LAPI a decision: every panel of the
// Grafana dashboard returns data, and every alert rule evaluates without
// error. With HBF_UPDATE_DOCS=1 the
// panels' charts in docs/img/ are drawn again from the query results.
func TestDashboardQueriesReturnData(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "blocked", "scanner", "etcd", "lapi"}})
	host := lab.Host.Addr4
	serveHTTP(t, lab.Host, 8080, 8081, 8082, 8083)
	etcd := etcdtest.Start(t, etcdtest.Options{NS: lab.Peers["etcd"], Addr: lab.Peers["etcd"].Addr4})
	lapi := crowdsectest.Start(t, crowdsectest.Options{NS: lab.Peers["lapi"], Addr: lab.Peers["lapi"].Addr4})
	d := startDaemon(t, lab, append(crowdsecArgs(t, lapi, "hbf"), "--fleet-etcd", etcd.Endpoint(), "--node-name", "a")...)
	d.mustCLI("block", lab.Peers["blocked"].Addr4.String())
	eventually(t, "a in the fleet", func() bool { return d.fleetStatus().Connected })
	startPrometheus(t, lab.Host)
	start := time.Now()

	// 20 seconds of traffic: connections all along, a flood from the blocked
	// source, a scan and a block of another node in the middle.
	stop := clientLoop(lab.Peers["client"], host, 8080)
	time.Sleep(5 * time.Second)
	flood := hpingFlood(t, lab.Peers["blocked"], host.String(), 20_000, "u20")
	time.Sleep(3 * time.Second)
	for port := 8080; port <= 8083; port++ {
		dialOutcome(lab.Peers["scanner"], hostPort(host, port), 500*time.Millisecond)
	}
	now := time.Now().UTC()
	etcd.MustCtl("put", "/hbf/blocks/b/203.0.113.77%2F32", fmt.Sprintf(
		`{"version":1,"prefix":"203.0.113.77/32","origin":"manual","reason":"by hand","created":%q,"expires_at":%q}`,
		now.Format(time.RFC3339Nano), now.Add(time.Hour).Format(time.RFC3339Nano)))
	lapi.Cscli("decisions", "add", "-i", "198.51.100.99", "-d", "1h", "-R", "dashboard")
	flood()
	eventually(t, "b's block applied here", func() bool { return d.fleetStatus().Entries["b"] == 1 })
	eventually(t, "CrowdSec's decision applied here", func() bool { return d.status().CrowdSec.Decisions["cscli"] == 1 })
	time.Sleep(12 * time.Second)
	stop()
	end := time.Now()

	b, err := os.ReadFile("../../deploy/grafana/hbf.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash dashboard
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/hbf.json: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	update := os.Getenv("HBF_UPDATE_DOCS") == "1"
	for _, p := range dash.Panels {
		var charts []chartSeries
		for _, target := range p.Targets {
			expr := grafanaExpr(target.Expr)
			if got := promQuery(t, lab.Host, "query", url.Values{"query": {expr}}); len(got) == 0 {
				t.Errorf("panel %q: %s returns no data", p.Title, expr)
			}
			if p.Type != "timeseries" {
				continue
			}
			for _, s := range promQuery(t, lab.Host, "query_range", url.Values{"query": {expr},
				"start": {unixSeconds(start)}, "end": {unixSeconds(end)}, "step": {"1"}}) {
				charts = append(charts, chartSeries{name: legend(target.LegendFormat, s.Metric), points: s.Values})
			}
		}
		if p.Type == "timeseries" {
			svg := drawChart(p.Title, charts, start)
			if len(charts) == 0 || !strings.Contains(svg, "<polyline") {
				t.Errorf("panel %q: nothing to draw", p.Title)
			}
			if update {
				path := filepath.Join("../../docs/img", "dashboard-"+slug(p.Title)+".svg")
				if err := os.WriteFile(path, []byte(svg), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	var rules []struct {
		Name   string `json:"name"`
		Health string `json:"health"`
		Error  string `json:"lastError"`
	}
	resp, err := lab.Host.HTTPClient().Get("http://127.0.0.1:9090/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Data struct {
			Groups []struct {
				Rules json.RawMessage `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	for _, g := range body.Data.Groups {
		json.Unmarshal(g.Rules, &rules)
		for _, r := range rules {
			if r.Health != "ok" {
				t.Errorf("alert %s: health %q: %s", r.Name, r.Health, r.Error)
			}
		}
	}
	if len(rules) < 10 {
		t.Errorf("%d alert rules loaded, want every rule of deploy/prometheus/alerts.yaml", len(rules))
	}
}

func unixSeconds(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

func slug(s string) string {
	return strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(s), "-"), "-")
}

// legend fills a Grafana legend format ({{label}}) from a series' labels.
func legend(format string, labels map[string]string) string {
	out := regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`).ReplaceAllStringFunc(format, func(m string) string {
		return labels[strings.Trim(m, "{} ")]
	})
	if out == "" {
		return "value"
	}
	return out
}

type chartSeries struct {
	name   string
	points [][]any // [unix seconds, "value"]
}

// drawChart draws series as an SVG line chart: what the panel shows.
func drawChart(title string, series []chartSeries, start time.Time) string {
	const w, h, left, top, bottom = 640.0, 220.0, 50.0, 28.0, 40.0
	plotW, plotH := w-left-10, h-top-bottom
	sort.Slice(series, func(i, j int) bool { return series[i].name < series[j].name })
	maxT, maxV := 1.0, 0.0
	for _, s := range series {
		for _, p := range s.points {
			ts, _ := p[0].(float64)
			v, _ := strconv.ParseFloat(fmt.Sprint(p[1]), 64)
			maxT = math.Max(maxT, ts-float64(start.Unix()))
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				maxV = math.Max(maxV, v)
			}
		}
	}
	if maxV == 0 {
		maxV = 1
	}
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="16" font-size="13" font-weight="bold">%s</text>`+"\n", left, title)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`, left, top+plotH, left+plotW, top+plotH)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#999"/>`+"\n", left, top, left, top+plotH)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%.3g</text><text x="%.0f" y="%.0f" text-anchor="end">0</text>`+"\n",
		left-4, top+8, maxV, left-4, top+plotH)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">0 s</text><text x="%.0f" y="%.0f" text-anchor="end">%.0f s</text>`+"\n",
		left, top+plotH+14, left+plotW, top+plotH+14, maxT)
	for i, s := range series {
		color := colors[i%len(colors)]
		var pts []string
		for _, p := range s.points {
			ts, _ := p[0].(float64)
			v, err := strconv.ParseFloat(fmt.Sprint(p[1]), 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			x := left + (ts-float64(start.Unix()))/maxT*plotW
			y := top + plotH - v/maxV*plotH
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="3" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			left+float64(i%4)*145, h-12+float64(i/4)*0, color, left+float64(i%4)*145+14, h-8, s.name)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
