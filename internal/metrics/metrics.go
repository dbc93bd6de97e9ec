// Package metrics exposes hbf's counters to Prometheus. Data-plane counters
// are read from the kernel's per-CPU maps at scrape time, so they are exact
// whatever the event stream lost; no metric has a per-address label.
package metrics

import (
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/hbf-firewall/hbf/internal/dataplane"
)

// Source is what the collector reads at scrape time.
type Source interface {
	Counters() (dataplane.Counters, error)
}

// Attachment is an interface hbf protects, for hbf_xdp_attached.
type Attachment struct {
	Iface string
	Mode  string
}

// Inputs are what the collector reads besides the data plane's counters.
type Inputs struct {
	Dataplane Source
	// Blocked counts the prefixes blocked, as the daemon keeps the count:
	// a scrape never walks the kernel's maps.
	Blocked  func() int
	Attached func() []Attachment
	// Lists counts the list sources in good shape and degraded.
	Lists func() (ok, degraded int)
	// Repairs counts what the watchdog repaired, by kind.
	Repairs func() map[string]uint64
	// Dropped counts event lines the daemon's outputs dropped: they did
	// not keep up. Part of hbf_events_lost_total.
	Dropped func() uint64
	// UndoFailures counts the changes the kernel refused that could not be
	// undone in the store.
	UndoFailures func() uint64
	// Fleet is the fleet's side; nil when the host is in no fleet.
	Fleet func() FleetStats
	// Protected counts what is never blocked by kind (host, etcd,
	// member …), and what of it the kernel's allowlist has no room for.
	Protected func() (entries, unenforced map[string]int)
	// ProtectedKinds are every kind, shown from the start.
	ProtectedKinds []string
	// Limits are the connection limits with what each did.
	Limits func() ([]LimitStats, error)
	// CrowdSec is the link to CrowdSec's LAPI; nil without one.
	CrowdSec func() CrowdSecStats
}

// CrowdSecStats are what the hbf_crowdsec_ families show.
type CrowdSecStats struct {
	Connected bool
	LastPull  time.Time         // zero: never
	Decisions map[string]int    // in force, by origin
	Skipped   map[string]uint64 // by reason: every reason, from the start
	Refused   map[string]uint64 // by reason: every reason, from the start
	Failures  uint64
	// The alerts of hbf's blocks pushed to LAPI, and dropped waiting.
	AlertsPushed, AlertsDropped uint64
}

// LimitStats is what one connection limit did; its port and protocol are
// its labels (one limit a port, so the labels stay as few as the limits).
type LimitStats struct {
	Port  uint16
	Proto string
	dataplane.LimitStats
}

// FleetStats are what the hbf_fleet_ families show.
type FleetStats struct {
	Connected bool
	Members   int
	Entries   int // the fleet's blocks applied here
	Published uint64
	Rejected  map[string]uint64 // by reason
	Errors    map[string]uint64 // by operation
}

// Metrics is hbf's registry.
type Metrics struct {
	reg          *prometheus.Registry
	decodeErrors atomic.Uint64
	fleetDelay   prometheus.Histogram
}

// counters are the program's counters as Prometheus descriptions, one a
// family; the table in dataplane names them.
var (
	counters    = dataplane.CounterTable()
	counterDesc = func() map[string]*prometheus.Desc {
		out := map[string]*prometheus.Desc{}
		for _, c := range counters {
			if out[c.Metric] != nil {
				continue
			}
			var labels []string
			if c.Reason != "" {
				labels = []string{"reason"}
			}
			out[c.Metric] = prometheus.NewDesc(c.Metric, c.Help, labels, nil)
		}
		return out
	}()
)

var (
	descBlocked   = prometheus.NewDesc("hbf_blocked_sources", "Blocks (addresses and prefixes) in force, counted as the daemon makes and ends them. Expired blocks leave it at the next sweep (10 s at most); a scan block the kernel made whose event was lost joins it at the next reconciliation, which follows lost events within 10 s.", nil, nil)
	descRepairs   = prometheus.NewDesc("hbf_repairs_total", "What hbf noticed undone from outside and repaired: link (program detached), interface (re-created), pin (removed), head (a program put ahead of hbf at TC ingress).", []string{"kind"}, nil)
	descScrapeErr = prometheus.NewDesc("hbf_scrape_errors_total", "Failures to read the data plane while serving a scrape.", nil, nil)
	descAttached  = prometheus.NewDesc("hbf_xdp_attached", "Interfaces the XDP program is attached to, with the attach mode.", []string{"iface", "mode"}, nil)
	descUndo      = prometheus.NewDesc("hbf_undo_failures_total", "Changes the kernel refused that could not be undone in the store: the two disagree until the next reconciliation.", nil, nil)
	descFleetUp   = prometheus.NewDesc("hbf_fleet_connected", "1 while this host is connected to its fleet's etcd.", nil, nil)
	descMembers   = prometheus.NewDesc("hbf_fleet_members", "Members of the fleet, this host included, as it last read them.", nil, nil)
	descFleetN    = prometheus.NewDesc("hbf_fleet_entries", "Blocks of other nodes of the fleet applied here.", nil, nil)
	descPublished = prometheus.NewDesc("hbf_fleet_published_total", "Blocks this host wrote to the fleet.", nil, nil)
	descRejected  = prometheus.NewDesc("hbf_fleet_rejected_total", "Entries of the fleet not applied here, by reason.", []string{"reason"}, nil)
	descFleetErr  = prometheus.NewDesc("hbf_fleet_errors_total", "Failed operations with the fleet's etcd, by operation.", []string{"op"}, nil)
	descLists     = prometheus.NewDesc("hbf_blocklist_sources", "Blocklist files and feeds, by state: ok, or degraded (an older version or copy in force).", []string{"state"}, nil)
	descProtected = prometheus.NewDesc("hbf_protected_entries", "What hbf never blocks, by why: loopback, host, gateway, resolver, etcd, crowdsec (its LAPI), ssh, flag, ntp, metadata, manual (hbf allow), fleet (hbf allow --fleet), member.", []string{"kind"}, nil)
	descCSUp      = prometheus.NewDesc("hbf_crowdsec_connected", "1 while the last read of CrowdSec's decision stream succeeded.", nil, nil)
	descCSAge     = prometheus.NewDesc("hbf_crowdsec_last_pull_age_seconds", "Seconds since the last read of CrowdSec's decision stream that was applied; absent before the first.", nil, nil)
	descCSHeld    = prometheus.NewDesc("hbf_crowdsec_decisions", "CrowdSec's ban decisions in force here, by their origin (cscli, crowdsec, CAPI, lists …).", []string{"origin"}, nil)
	descCSSkip    = prometheus.NewDesc("hbf_crowdsec_skipped_total", "CrowdSec decisions not enforced because hbf does not do or read them, by reason: type (not a ban), scope, value, duration, own (of an alert hbf pushed).", []string{"reason"}, nil)
	descCSRefused = prometheus.NewDesc("hbf_crowdsec_refused_total", "CrowdSec ban decisions refused, by reason: policy (protected, or wider than --crowdsec-min-prefix-v4/-v6), cap (--crowdsec-max-per-origin).", []string{"reason"}, nil)
	descCSFail    = prometheus.NewDesc("hbf_crowdsec_pull_failures_total", "Reads of CrowdSec's decision stream that failed (unreachable, refused, not JSON).", nil, nil)
	descCSPushed  = prometheus.NewDesc("hbf_crowdsec_alerts_pushed_total", "Alerts of hbf's blocks pushed to CrowdSec's LAPI (--crowdsec-machine-id).", nil, nil)
	descCSDropped = prometheus.NewDesc("hbf_crowdsec_alerts_dropped_total", "Alerts of hbf's blocks dropped unsent: the oldest, while LAPI was out of reach and the queue full.", nil, nil)
	limitLabels   = []string{"port", "proto"}
	descLimitConn = prometheus.NewDesc("hbf_limit_connections_total", "Connections (UDP: datagrams) a connection limit counted, by the limit's port.", limitLabels, nil)
	descLimitOver = prometheus.NewDesc("hbf_limit_exceeded_total", "Connections (UDP: datagrams) over a connection limit, by the limit's port.", limitLabels, nil)
	descLimitBlk  = prometheus.NewDesc("hbf_limit_blocks_total", "Sources a connection limit blocked, by the limit's port.", limitLabels, nil)
	descLimitDrop = prometheus.NewDesc("hbf_limit_dropped_total", "SYNs and datagrams a connection limit's :drop dropped, by the limit's port.", limitLabels, nil)
	descUnenforce = prometheus.NewDesc("hbf_protected_unenforced", "Protected entries the kernel's allowlist has no room for, by kind: no decision blocks them, but a forged scan could.", []string{"kind"}, nil)
)

// order puts the families people look at first at the top of /metrics:
// the program's counters in the table's order, the blocked sources after
// the scans; the rest follow by name.
var order = func() []string {
	var out []string
	for _, c := range counters {
		if !slices.Contains(out, c.Metric) {
			out = append(out, c.Metric)
		}
	}
	at := slices.Index(out, "hbf_port_scans_monitored_total") + 1
	return slices.Insert(out, at, "hbf_blocked_sources")
}()

type collector struct {
	Inputs
	decodeErrors *atomic.Uint64
	scrapeErrors atomic.Uint64
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range counterDesc {
		ch <- d
	}
	for _, d := range []*prometheus.Desc{descBlocked, descRepairs, descScrapeErr, descAttached, descLists, descUndo,
		descFleetUp, descMembers, descFleetN, descPublished, descRejected, descFleetErr, descProtected, descUnenforce,
		descLimitConn, descLimitOver, descLimitBlk, descLimitDrop, descCSUp, descCSAge, descCSHeld, descCSSkip, descCSRefused, descCSFail,
		descCSPushed, descCSDropped} {
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
		for _, kc := range counters {
			v := kc.Value(&k)
			if kc.Lost {
				v += c.decodeErrors.Load()
				if c.Dropped != nil {
					v += c.Dropped()
				}
			}
			var labels []string
			if kc.Reason != "" {
				labels = []string{kc.Reason}
			}
			counter(counterDesc[kc.Metric], v, labels...)
		}
	}
	ch <- prometheus.MustNewConstMetric(descBlocked, prometheus.GaugeValue, float64(c.Blocked()))
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
		for _, kind := range []string{dataplane.RepairLink, dataplane.RepairInterface, dataplane.RepairPin, dataplane.RepairHead} {
			counter(descRepairs, got[kind], kind)
		}
	}
	if c.UndoFailures != nil {
		counter(descUndo, c.UndoFailures())
	}
	if c.Fleet != nil {
		f := c.Fleet()
		ch <- prometheus.MustNewConstMetric(descFleetUp, prometheus.GaugeValue, oneIf(f.Connected))
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(f.Members))
		ch <- prometheus.MustNewConstMetric(descFleetN, prometheus.GaugeValue, float64(f.Entries))
		counter(descPublished, f.Published)
		for reason, n := range f.Rejected {
			counter(descRejected, n, reason)
		}
		for op, n := range f.Errors {
			counter(descFleetErr, n, op)
		}
	}
	if c.Protected != nil {
		entries, unenforced := c.Protected()
		for _, kind := range c.ProtectedKinds {
			ch <- prometheus.MustNewConstMetric(descProtected, prometheus.GaugeValue, float64(entries[kind]), kind)
			ch <- prometheus.MustNewConstMetric(descUnenforce, prometheus.GaugeValue, float64(unenforced[kind]), kind)
		}
	}
	if c.Limits != nil {
		ls, err := c.Limits()
		if err != nil {
			c.scrapeErrors.Add(1)
		}
		for _, l := range ls {
			port := strconv.Itoa(int(l.Port))
			counter(descLimitConn, l.Counted, port, l.Proto)
			counter(descLimitOver, l.Exceeded, port, l.Proto)
			counter(descLimitBlk, l.Blocked, port, l.Proto)
			counter(descLimitDrop, l.Dropped, port, l.Proto)
		}
	}
	if c.CrowdSec != nil {
		cs := c.CrowdSec()
		ch <- prometheus.MustNewConstMetric(descCSUp, prometheus.GaugeValue, oneIf(cs.Connected))
		if !cs.LastPull.IsZero() {
			ch <- prometheus.MustNewConstMetric(descCSAge, prometheus.GaugeValue, time.Since(cs.LastPull).Seconds())
		}
		for origin, n := range cs.Decisions {
			ch <- prometheus.MustNewConstMetric(descCSHeld, prometheus.GaugeValue, float64(n), origin)
		}
		for reason, n := range cs.Skipped {
			counter(descCSSkip, n, reason)
		}
		for reason, n := range cs.Refused {
			counter(descCSRefused, n, reason)
		}
		counter(descCSFail, cs.Failures)
		counter(descCSPushed, cs.AlertsPushed)
		counter(descCSDropped, cs.AlertsDropped)
	}
	counter(descScrapeErr, c.scrapeErrors.Load())
}

// oneIf is a gauge's 1 for true, 0 for false.
func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// New builds the registry: hbf's metrics, build info, and the Go runtime's.
func New(in Inputs, version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), fleetDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hbf_fleet_apply_delay_seconds",
		Help:    "From a fleet block's creation on another node to its application here.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
	})}
	m.reg.MustRegister(&collector{Inputs: in, decodeErrors: &m.decodeErrors}, m.fleetDelay)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "hbf_build_info",
		Help:        "hbf's version; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveFleetDelay counts a fleet block applied d after it was made.
func (m *Metrics) ObserveFleetDelay(d time.Duration) { m.fleetDelay.Observe(d.Seconds()) }

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
