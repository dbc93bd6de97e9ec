package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/crowdsec"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/limit"
	"github.com/hbf-firewall/hbf/internal/ports"
)

// fakeStream is a LAPI's decision stream: each read answers the next
// body, or the last again.
type fakeStream struct {
	mu     sync.Mutex
	bodies []string
	reads  []string // each read's startup value
}

func (f *fakeStream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("X-Api-Key") != "bouncer-key" {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	f.reads = append(f.reads, r.URL.Query().Get("startup"))
	body := f.bodies[0]
	if len(f.bodies) > 1 {
		f.bodies = f.bodies[1:]
	}
	w.Write([]byte(body))
}

// crowdsecHarness is a harness whose daemon reads the fake stream.
func crowdsecHarness(t *testing.T, bodies ...string) (*harness, *fakeStream) {
	t.Helper()
	h := newHarness(t)
	f := &fakeStream{bodies: bodies}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	key := filepath.Join(h.dir, "key")
	if err := os.WriteFile(key, []byte("bouncer-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.d.start.CrowdSec = Defaults.Start.CrowdSec
	h.d.start.CrowdSec.LAPI, h.d.start.CrowdSec.KeyFile = srv.URL, key
	if err := h.d.openCrowdSec(); err != nil {
		t.Fatal(err)
	}
	return h, f
}

func TestCrowdSecPullAppliesAndRefuses(t *testing.T) {
	h, f := crowdsecHarness(t, `{"new":[
		{"id":1,"origin":"cscli","type":"ban","scope":"Ip","value":"203.0.113.7","duration":"1h","scenario":"manual"},
		{"id":2,"origin":"CAPI","type":"ban","scope":"ip","value":"198.51.100.9/32","duration":"4h","scenario":"ssh-bf"},
		{"id":3,"origin":"cscli","type":"ban","scope":"Ip","value":"192.0.2.1","duration":"1h","scenario":"manual"},
		{"id":4,"origin":"cscli","type":"ban","scope":"Range","value":"10.0.0.0/8","duration":"1h","scenario":"manual"},
		{"id":5,"origin":"cscli","type":"captcha","scope":"Ip","value":"203.0.113.8","duration":"1h","scenario":"manual"}],
		"deleted":null}`,
		`{"new":null,"deleted":[{"id":1,"origin":"cscli","type":"ban","scope":"Ip","value":"203.0.113.7","duration":"-1s"}]}`)
	l := h.d.crowdsec
	if err := l.pull(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"203.0.113.7/32", "198.51.100.9/32"} {
		if _, ok := h.kernel(p); !ok {
			t.Errorf("%s not blocked", p)
		}
	}
	for _, p := range []string{"192.0.2.1/32", "10.0.0.0/8", "203.0.113.8/32"} {
		if _, ok := h.kernel(p); ok {
			t.Errorf("%s blocked: the host's own, wider than /16, a captcha", p)
		}
	}
	st := l.status()
	if !st.Connected || st.Decisions["cscli"] != 1 || st.Decisions["CAPI"] != 1 || st.Refused["policy"] != 2 || st.Skipped["type"] != 1 {
		t.Errorf("status %+v", st)
	}
	if err := l.pull(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.kernel("203.0.113.7/32"); ok {
		t.Error("the deleted decision's block stays")
	}
	if strings.Join(f.reads, ",") != "true,false" {
		t.Errorf("reads %v, want a snapshot then the changes", f.reads)
	}
}

// A LAPI out of reach leaves what is in force, and says why; the next read
// after a failure is a snapshot.
func TestCrowdSecFailureKeepsDecisions(t *testing.T) {
	h, f := crowdsecHarness(t, `{"new":[{"id":1,"origin":"cscli","type":"ban","scope":"Ip","value":"203.0.113.7","duration":"1h","scenario":"m"}]}`,
		`not json`, `{"new":[{"id":1,"origin":"cscli","type":"ban","scope":"Ip","value":"203.0.113.7","duration":"59m","scenario":"m"}]}`)
	l := h.d.crowdsec
	l.cfg.Interval, l.cfg.Resync = 10*time.Millisecond, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.reads)
		f.mu.Unlock()
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reads) < 3 || f.reads[0] != "true" || f.reads[1] != "false" || f.reads[2] != "true" {
		t.Fatalf("reads %v: want a snapshot, the changes, then a snapshot after the failure", f.reads)
	}
	if _, ok := h.kernel("203.0.113.7/32"); !ok {
		t.Error("a failed read ended a decision's block")
	}
	if st := l.status(); st.Failures != 1 {
		t.Errorf("status %+v, want 1 failure", st)
	}
}

// fakeAlerts is a LAPI's login and alerts endpoints, failing the first
// pushes it is told to.
type fakeAlerts struct {
	mu     sync.Mutex
	fail   int
	alerts []crowdsec.Alert
}

func (f *fakeAlerts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/v1/watchers/login":
		w.Write([]byte(`{"code":200,"expire":"2100-01-01T00:00:00Z","token":"t"}`))
	case "/v1/alerts":
		if f.fail > 0 {
			f.fail--
			http.Error(w, "database locked", http.StatusInternalServerError)
			return
		}
		var in []crowdsec.Alert
		json.NewDecoder(r.Body).Decode(&in)
		f.alerts = append(f.alerts, in...)
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`["1"]`))
	}
}

// A block for a connection limit goes to LAPI as an alert carrying the
// ban; a LAPI that fails keeps it queued until it takes it.
func TestCrowdSecPushesLimitBlocks(t *testing.T) {
	h := newHarness(t)
	f := &fakeAlerts{fail: 2}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	for name, content := range map[string]string{"key": "bouncer-key", "password": "secret"} {
		if err := os.WriteFile(filepath.Join(h.dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h.d.start.CrowdSec = Defaults.Start.CrowdSec
	cs := &h.d.start.CrowdSec
	cs.LAPI, cs.KeyFile, cs.MachineID, cs.PasswordFile = srv.URL, filepath.Join(h.dir, "key"), "hbf", filepath.Join(h.dir, "password")
	if err := h.d.openCrowdSec(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.d.crowdsec.pushAlerts(ctx)

	h.d.live.Limits = []limit.Limit{{Port: ports.Port{Num: 22}, Count: 6, Window: 30 * time.Second}}
	src := netip.MustParseAddr("203.0.113.70")
	h.d.report(&dataplane.LimitExceeded{Time: time.Now(), Src: netip.AddrPortFrom(src, 40000), Source: netip.PrefixFrom(src, 32),
		Dst: netip.MustParseAddr("192.0.2.1"), Port: ports.Port{Num: 22}, Count: 6, Window: 30 * time.Second,
		Blocked: true, Expires: time.Now().Add(time.Hour)})
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.alerts)
		f.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.alerts) != 1 {
		t.Fatalf("LAPI got %d alerts, want the limit's one after two failures", len(f.alerts))
	}
	a := f.alerts[0]
	if a.Scenario != "hbf/connection-limit" || a.Source.Value != "203.0.113.70" || len(a.Decisions) != 1 ||
		a.Decisions[0].Duration != "3600s" || a.Decisions[0].Type != "ban" || a.Events[0].Meta[1].Value != "22" {
		t.Errorf("alert %+v", a)
	}
	if st := h.d.crowdsec.status(); st.AlertsPushed != 1 || st.AlertsQueued != 0 {
		t.Errorf("status %+v", st)
	}
}

// The CrowdSec settings are checked before anything starts: a bouncer
// needs a key or a client certificate, pairs go together, and every
// refusal names the flag and what to do.
func TestCrowdSecSettingsAreChecked(t *testing.T) {
	base := Defaults.Start.CrowdSec
	base.LAPI, base.KeyFile = "http://192.0.2.1:8080", "/etc/hbf/bouncer.key"
	for _, c := range []struct {
		name string
		edit func(*CrowdSec)
		want string // none: accepted
	}{
		{"a key", func(*CrowdSec) {}, ""},
		{"a client certificate alone", func(c *CrowdSec) { c.KeyFile, c.Cert, c.Key = "", "/c.pem", "/k.pem" }, ""},
		{"neither", func(c *CrowdSec) { c.KeyFile = "" }, "needs --crowdsec-key-file"},
		{"a certificate without its key", func(c *CrowdSec) { c.Cert = "/c.pem" }, "--crowdsec-cert and --crowdsec-key go together"},
		{"not a URL", func(c *CrowdSec) { c.LAPI = "192.0.2.1:8080" }, `--crowdsec-lapi "192.0.2.1:8080": must be an http:// or https:// URL`},
		{"a resync shorter than the interval", func(c *CrowdSec) { c.Resync = time.Second }, "--crowdsec-resync 1s: must be at least"},
		{"a machine without its password", func(c *CrowdSec) { c.MachineID = "hbf" }, "go together"},
		{"an unknown push class", func(c *CrowdSec) { c.Push = []string{"manual"} }, `--crowdsec-push "manual"`},
		{"a key file without a LAPI", func(c *CrowdSec) { c.LAPI = "" }, "need --crowdsec-lapi"},
	} {
		cs := base
		c.edit(&cs)
		err := cs.validate()
		if c.want == "" && err != nil {
			t.Errorf("%s: %v, want it accepted", c.name, err)
		}
		if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want a refusal saying %q", c.name, err, c.want)
		}
	}
}
