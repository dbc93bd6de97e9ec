// Package metrics exposes hbf's counters to Prometheus. Data-plane counters
// are read from the kernel's per-CPU maps at scrape time, so they are exact
// whatever the event stream lost; no metric has a per-address label.
package metrics

import (
	"net/http"
	"runtime"
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/hbf-firewall/hbf/internal/dataplane"
)

// Source is what the collector reads at scrape time.
type Source interface {
	Counters() (dataplane.Counters, error)
	// BlockedSources counts the block entries in force.
	BlockedSources() (int, error)
}

// Attachment is an interface hbf protects, for hbf_xdp_attached.
type Attachment struct {
	Iface string
	Mode  string
}

// Inputs are what the collector reads besides the data plane's counters.
type Inputs struct {
	Dataplane Source
	Attached  func() []Attachment
	// Lists counts the list sources in good shape and degraded.
	Lists func() (ok, degraded int)
	// Repairs counts what the watchdog repaired, by kind.
	Repairs func() map[string]uint64
	// Dropped counts event lines the daemon's outputs dropped: they did
	// not keep up. Part of hbf_events_lost_total.
	Dropped func() uint64
}

// Metrics is hbf's registry.
type Metrics struct {
	reg          *prometheus.Registry
	decodeErrors atomic.Uint64
}

var (
	descNewConns   = prometheus.NewDesc("hbf_new_connections_total", "New inbound TCP connections (SYNs that passed), retransmissions counted once.", nil, nil)
	descPackets    = prometheus.NewDesc("hbf_packets_total", "Packets the XDP program saw.", nil, nil)
	descPassed     = prometheus.NewDesc("hbf_packets_passed_total", "Packets the XDP program passed; with the drops, every packet it saw.", nil, nil)
	descDropped    = prometheus.NewDesc("hbf_packets_dropped_total", "Packets the XDP program dropped, by reason.", []string{"reason"}, nil)
	descScans      = prometheus.NewDesc("hbf_port_scans_detected_total", "Port scans detected, allowlisted sources included.", nil, nil)
	descScansAllow = prometheus.NewDesc("hbf_port_scans_allowlisted_total", "Port scans from allowlisted sources: reported, not blocked.", nil, nil)
	descScansMon   = prometheus.NewDesc("hbf_port_scans_monitored_total", "Port scans in monitor mode: reported as would-block, not blocked.", nil, nil)
	descBlocked    = prometheus.NewDesc("hbf_blocked_sources", "Block entries (addresses and prefixes) in force.", nil, nil)
	descScanBlocks = prometheus.NewDesc("hbf_scan_blocks_total", "Blocks the XDP program inserted for scanners.", nil, nil)
	descBlockFail  = prometheus.NewDesc("hbf_scan_block_failures_total", "Scanner blocks the full block map refused.", nil, nil)
	descOverrides  = prometheus.NewDesc("hbf_allowlist_overrides_total", "Packets of blocked sources passed because the source is allowlisted.", nil, nil)
	descTracker    = prometheus.NewDesc("hbf_scan_tracker_full_total", "Attempts from new sources the full scan tracker could not hold.", nil, nil)
	descRateLimit  = prometheus.NewDesc("hbf_scan_blocks_rate_limited_total", "Scanners not blocked because the minute's budget of scan blocks was spent (their attempts are still dropped for the window).", nil, nil)
	descEvictions  = prometheus.NewDesc("hbf_scan_tracker_evictions_total", "First attempts of live sources overwritten by another source's in the tracker's first tier.", nil, nil)
	descRepairs    = prometheus.NewDesc("hbf_repairs_total", "What hbf noticed undone from outside and repaired: link (program detached), interface (re-created), pin (removed).", []string{"kind"}, nil)
	descLost       = prometheus.NewDesc("hbf_events_lost_total", "Events lost: ring buffer full in the kernel; undecodable, or dropped because the output (stdout, log file) did not keep up, in the daemon.", nil, nil)
	descScrapeErr  = prometheus.NewDesc("hbf_scrape_errors_total", "Failures to read the data plane while serving a scrape.", nil, nil)
	descAttached   = prometheus.NewDesc("hbf_xdp_attached", "Interfaces the XDP program is attached to, with the attach mode.", []string{"iface", "mode"}, nil)
	descLists      = prometheus.NewDesc("hbf_blocklist_sources", "Blocklist files and feeds, by state: ok, or degraded (an older version or copy in force).", []string{"state"}, nil)
)

// order puts the families people look at first at the top of /metrics.
var order = []string{
	"hbf_new_connections_total",
	"hbf_packets_total",
	"hbf_packets_passed_total",
	"hbf_packets_dropped_total",
	"hbf_port_scans_detected_total",
	"hbf_port_scans_allowlisted_total",
	"hbf_port_scans_monitored_total",
	"hbf_blocked_sources",
	"hbf_scan_blocks_total",
	"hbf_scan_block_failures_total",
	"hbf_scan_blocks_rate_limited_total",
	"hbf_events_lost_total",
}

type collector struct {
	Inputs
	decodeErrors *atomic.Uint64
	scrapeErrors atomic.Uint64
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNewConns, descPackets, descDropped, descScans, descScansAllow, descScansMon,
		descBlocked, descScanBlocks, descBlockFail, descOverrides, descTracker, descLost,
		descPassed, descRateLimit, descEvictions, descRepairs, descScrapeErr, descAttached, descLists} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if k, err := c.Dataplane.Counters(); err != nil {
		c.scrapeErrors.Add(1)
	} else {
		counter(descNewConns, k.NewConnections)
		counter(descPackets, k.Packets)
		counter(descPassed, k.Passed)
		for _, r := range dataplane.DropReasons() {
			counter(descDropped, k.Dropped[r], r.String())
		}
		counter(descScans, k.ScansDetected)
		counter(descScansAllow, k.ScansAllowlisted)
		counter(descScansMon, k.ScansMonitored)
		counter(descScanBlocks, k.BlocksAdded)
		counter(descBlockFail, k.BlockFailures)
		counter(descOverrides, k.AllowlistOverrides)
		counter(descTracker, k.TrackerFull)
		counter(descRateLimit, k.BlocksRateLimited)
		counter(descEvictions, k.TrackerEvictions)
		lost := k.EventsLost + c.decodeErrors.Load()
		if c.Dropped != nil {
			lost += c.Dropped()
		}
		counter(descLost, lost)
	}
	if n, err := c.Dataplane.BlockedSources(); err != nil {
		c.scrapeErrors.Add(1)
	} else {
		ch <- prometheus.MustNewConstMetric(descBlocked, prometheus.GaugeValue, float64(n))
	}
	for _, a := range c.Attached() {
		ch <- prometheus.MustNewConstMetric(descAttached, prometheus.GaugeValue, 1, a.Iface, a.Mode)
	}
	if c.Lists != nil {
		ok, degraded := c.Lists()
		ch <- prometheus.MustNewConstMetric(descLists, prometheus.GaugeValue, float64(ok), "ok")
		ch <- prometheus.MustNewConstMetric(descLists, prometheus.GaugeValue, float64(degraded), "degraded")
	}
	if c.Repairs != nil {
		got := c.Repairs()
		for _, kind := range []string{dataplane.RepairLink, dataplane.RepairInterface, dataplane.RepairPin} {
			counter(descRepairs, got[kind], kind)
		}
	}
	counter(descScrapeErr, c.scrapeErrors.Load())
}

// New builds the registry: hbf's metrics, build info, and the Go runtime's.
func New(in Inputs, version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(&collector{Inputs: in, decodeErrors: &m.decodeErrors})
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "hbf_build_info",
		Help:        "hbf's version; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// EventDecodeFailed counts an event the daemon could not decode as lost.
func (m *Metrics) EventDecodeFailed() { m.decodeErrors.Add(1) }

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(ordered{m.reg}, promhttp.HandlerOpts{})
}

// ordered returns families in the order above, the rest by name after them.
type ordered struct{ prometheus.Gatherer }

func (o ordered) Gather() ([]*dto.MetricFamily, error) {
	fams, err := o.Gatherer.Gather()
	rank := func(name string) int {
		if i := slices.Index(order, name); i >= 0 {
			return i
		}
		return len(order)
	}
	slices.SortStableFunc(fams, func(a, b *dto.MetricFamily) int { return rank(a.GetName()) - rank(b.GetName()) })
	return fams, err
}
