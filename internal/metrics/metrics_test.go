package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hbf-firewall/hbf/internal/dataplane"
)

type fakeSource struct{ c dataplane.Counters }

func (f fakeSource) Counters() (dataplane.Counters, error) { return f.c, nil }

func TestExposition(t *testing.T) {
	k := dataplane.Counters{Packets: 100, NewConnections: 5, ScansDetected: 1, EventsLost: 4}
	k.Dropped[dataplane.DropBlocked] = 10
	k.Dropped[dataplane.DropStealth] = 3
	k.Dropped[dataplane.DropScan] = 1
	k.Dropped[dataplane.DropMalformed] = 2
	k.Dropped[dataplane.DropTinyFragment] = 6
	src := fakeSource{k}
	m := New(Inputs{
		Dataplane: src,
		Blocked:   func() int { return 7 },
		Attached:  func() []Attachment { return []Attachment{{Iface: "eth0", Mode: "native"}} },
		Lists:     func() (int, int) { return 2, 1 },
	}, "test")
	m.EventDecodeFailed()

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()

	if !strings.HasPrefix(body, "# HELP hbf_new_connections_total") {
		t.Errorf("first family is not hbf_new_connections_total:\n%.200s", body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("exposition does not parse: %v", err)
	}
	value := func(name, reason string) float64 {
		for _, m := range fams[name].GetMetric() {
			if reason == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == reason) {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
		t.Fatalf("no %s{reason=%q}", name, reason)
		return 0
	}
	for _, tc := range []struct {
		name, reason string
		want         float64
	}{
		{"hbf_new_connections_total", "", 5},
		{"hbf_packets_total", "", 100},
		{"hbf_packets_dropped_total", "blocked", 10},
		{"hbf_packets_dropped_total", "stealth", 3},
		{"hbf_packets_dropped_total", "scan", 1},
		{"hbf_packets_dropped_total", "malformed", 2},
		{"hbf_packets_dropped_total", "tiny_fragment", 6},
		{"hbf_packets_dropped_total", "vlan_depth", 0},
		{"hbf_port_scans_detected_total", "", 1},
		{"hbf_blocked_sources", "", 7},
		{"hbf_events_lost_total", "", 5},
		{"hbf_build_info", "", 1},
		{"hbf_xdp_attached", "", 1},
		{"hbf_blocklist_sources", "degraded", 1},
	} {
		if got := value(tc.name, tc.reason); got != tc.want {
			t.Errorf("%s{%s} = %v, want %v", tc.name, tc.reason, got, tc.want)
		}
	}
}
