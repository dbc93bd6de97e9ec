package daemon

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/decision"
	"github.com/hbf-firewall/hbf/internal/hostnet"
	"github.com/hbf-firewall/hbf/internal/kerneltest"
	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/sources"
	"github.com/hbf-firewall/hbf/internal/store"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// The tests here run the daemon's wiring around its decision engine —
// lists followed, the fleet, lost events — against kerneltest.Fake,
// without root and without a kernel. The engine's own decisions are
// internal/decision's tests.

var root = api.Caller{UID: 0}

// The host of every harness: these addresses are never blocked.
var testHost = hostnet.Snapshot{
	Addrs:    []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
	Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64")},
}

// harness is a daemon with its engine over a fake kernel and a real store
// in a folder of the test's, as far as its start takes it before the
// program would attach.
type harness struct {
	t     *testing.T
	dir   string
	clock *testenv.Clock
	k     *kerneltest.Fake
	st    *store.Store
	s     *decision.Engine
	d     *daemon
	log   *testenv.Log
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), clock: testenv.NewClock(time.Date(2026, 11, 27, 15, 28, 5, 0, time.UTC)),
		log: &testenv.Log{}}
	h.k = kerneltest.NewFake(h.clock.Now)
	st, _, err := store.Open(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	audit, err := decision.OpenAudit(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { audit.Close() })
	log := slog.New(slog.NewTextHandler(h.log, nil))
	out, err := openOutputs(log, report.Text, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(out.close)
	set := Defaults.Settings
	h.d = &daemon{start: Start{StateDir: h.dir}, deps: Deps{Version: "test"}, log: log, k: h.k, st: st,
		audit: audit, live: set, host: testHost, hub: newHub(), conns: &connLimiter{}, out: out}
	s, err := decision.New(decision.Config{Kernel: h.k, Store: st, Rules: set.Rules, Protected: h.d.protectedBase(set, testHost),
		Audit: audit, Publish: h.d.publish, Log: log, Explain: explain, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	s.SetEscalation(set.Escalation, set.BlockDuration)
	if _, err := s.Reconcile(false); err != nil {
		t.Fatal(err)
	}
	h.st, h.s, h.d.state = st, s, s
	return h
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func (h *harness) unblock(target string) api.Result {
	rs := h.s.Unblock(root, []string{target}, false)
	return rs[0]
}

// kernel returns the fake kernel's entry of exactly p.
func (h *harness) kernel(p string) (dataplane.Rule, bool) {
	h.t.Helper()
	r, ok, err := h.k.LookupBlock(pfx(p))
	if err != nil {
		h.t.Fatal(err)
	}
	return r, ok
}

// stored returns the store's records of p.
func (h *harness) stored(p string) []store.Block {
	h.t.Helper()
	blocks, err := h.st.Blocks()
	if err != nil {
		h.t.Fatal(err)
	}
	var out []store.Block
	for _, b := range blocks {
		if b.Prefix == pfx(p) {
			out = append(out, b)
		}
	}
	return out
}

// writeList writes a list file in the harness's folder.
func (h *harness) writeList(name, content string) string {
	h.t.Helper()
	path := filepath.Join(h.dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return path
}

// setLists puts lists in force as a reload does.
func (h *harness) setLists(lists ...*sources.Source) {
	h.t.Helper()
	if _, _, err := h.s.ReplaceLists(lists); err != nil {
		h.t.Fatal(err)
	}
}

// scan is the kernel blocking a scanner for the first offence's hour, and
// the daemon hearing of it.
func (h *harness) scan(src string) {
	now := h.clock.Now()
	p := pfx(src)
	h.k.ScanBlock(p, now, now.Add(time.Hour))
	h.s.OnScan(&dataplane.Scan{Time: now, Src: p.Addr(), Source: p, Blocked: true, Expires: now.Add(time.Hour),
		Ports: []dataplane.PortTry{{Port: ports.Port{Num: 22}, Seen: now}, {Port: ports.Port{Num: 80}, Seen: now},
			{Port: ports.Port{Num: 443}, Seen: now}, {Port: ports.Port{Num: 53, Proto: ports.UDP}, Seen: now}}})
}

func wantError(t *testing.T, r api.Result, want string) {
	t.Helper()
	if r.OK || !strings.Contains(r.Error, want) {
		t.Errorf("%s: ok %v, error %q; want a refusal saying %q", r.Target, r.OK, r.Error, want)
	}
}

func sameTime(a, b time.Time) bool {
	d := a.Sub(b)
	return a.IsZero() == b.IsZero() && d < time.Second && d > -time.Second
}
