package decision

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/hostnet"
	"github.com/hbf-firewall/hbf/internal/kerneltest"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/protect"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/sources"
	"github.com/hbf-firewall/hbf/internal/store"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// The tests here run the engine's decisions, lists and reconciliation
// against kerneltest.Fake, without root and without a kernel: the fake is
// held to the kernel's behaviour by kerneltest's contract.

var root = api.Caller{UID: 0}

// The host of every harness: these addresses are never blocked.
var testHost = hostnet.Snapshot{
	Addrs:    []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
	Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64")},
}

// testBase is what the harness protects besides the allowlist.
var testBase = protect.Host(testHost, "/etc/resolv.conf")

// harness is an engine over a fake kernel and a real store in a folder
// of the test's.
type harness struct {
	t     testing.TB
	dir   string
	clock *testenv.Clock
	k     *kerneltest.Fake
	st    *store.Store
	s     *Engine
	log   *testenv.Log
	// What the reconciliation of the last open did.
	started ReconcileStats

	mu     sync.Mutex
	events []report.Event
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), clock: testenv.NewClock(time.Date(2026, 11, 27, 15, 28, 5, 0, time.UTC)),
		log: &testenv.Log{}}
	h.k = kerneltest.NewFake(h.clock.Now)
	h.open()
	return h
}

// open starts the engine on the store in the harness's folder, as a
// daemon's start does, and brings the kernel in step with it.
func (h *harness) open(lists ...*sources.Source) store.Recovery {
	h.t.Helper()
	st, rec, err := store.Open(h.dir)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { st.Close() })
	audit, err := OpenAudit(h.dir)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { audit.Close() })
	s, err := New(Config{Kernel: h.k, Store: st, Rules: policy.DefaultRules, Protected: testBase, Audit: audit,
		Publish: h.publish, Log: slog.New(slog.NewTextHandler(h.log, nil)), Now: h.clock.Now})
	if err != nil {
		h.t.Fatal(err)
	}
	s.SetEscalation(policy.DefaultEscalation, time.Hour)
	h.st, h.s = st, s
	s.SetLists(lists)
	if h.started, err = s.Reconcile(rec.Empty); err != nil {
		h.t.Fatal(err)
	}
	return rec
}

// reboot is the daemon starting again on its store with a kernel that
// lost every entry, with lists read at the start.
func (h *harness) reboot(lists ...*sources.Source) {
	h.t.Helper()
	h.k = kerneltest.NewFake(h.clock.Now)
	h.st.Close()
	h.open(lists...)
}

func (h *harness) publish(ev report.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

// published returns the events of type T published so far.
func published[T report.Event](h *harness) []T {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []T
	for _, ev := range h.events {
		if e, ok := ev.(T); ok {
			out = append(out, e)
		}
	}
	return out
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// one runs a change on one target and returns its result.
func one(rs []api.Result) api.Result {
	if len(rs) != 1 {
		panic("one result expected")
	}
	return rs[0]
}

func (h *harness) block(target string, d time.Duration) api.Result {
	return one(h.s.Block(root, []string{target}, d, "", false))
}

func (h *harness) mustBlock(target string, d time.Duration) {
	h.t.Helper()
	if r := h.block(target, d); !r.OK {
		h.t.Fatalf("block %s: %s", target, r.Error)
	}
}

func (h *harness) unblock(target string) api.Result {
	return one(h.s.Unblock(root, []string{target}, false))
}

func (h *harness) allow(target string, d time.Duration) api.Result {
	return one(h.s.Allow(root, []string{target}, d, ""))
}

func (h *harness) disallow(target string) api.Result {
	return one(h.s.Disallow(root, []string{target}))
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

// history returns the actions the store's history holds for p, oldest first.
func (h *harness) history(p string) []string {
	h.t.Helper()
	changes, err := h.st.History(1000)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, c := range changes {
		if c.Prefix == pfx(p) {
			out = append(out, c.Action)
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

// list reads a list file as the daemon does.
func (h *harness) list(path string) *sources.Source {
	h.t.Helper()
	f, err := sources.ReadFile(path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return &sources.Source{Spec: sources.Spec{Where: path}, List: f.List, Loaded: h.clock.Now()}
}

// setLists puts lists in force as a reload does.
func (h *harness) setLists(lists ...*sources.Source) {
	h.t.Helper()
	if _, _, err := h.s.ReplaceLists(lists); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) reconcile(recovering bool) ReconcileStats {
	h.t.Helper()
	st, err := h.s.Reconcile(recovering)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// scanEvent is the program's event for a scanner it blocked at at.
func scanEvent(src string, at, expires time.Time) *dataplane.Scan {
	p := pfx(src)
	return &dataplane.Scan{Time: at, Src: p.Addr(), Source: p, Blocked: true, Expires: expires,
		Ports: []dataplane.PortTry{{Port: ports.Port{Num: 22}, Seen: at}, {Port: ports.Port{Num: 80}, Seen: at},
			{Port: ports.Port{Num: 443}, Seen: at}, {Port: ports.Port{Num: 53, Proto: ports.UDP}, Seen: at}}}
}

// scan is the kernel blocking a scanner for the first offence's hour, and
// the daemon hearing of it; it returns the block's expiry and reason.
func (h *harness) scan(src string) (time.Time, string) {
	now := h.clock.Now()
	h.k.ScanBlock(pfx(src), now, now.Add(time.Hour))
	return h.s.OnScan(scanEvent(src, now, now.Add(time.Hour)))
}

func wantError(t *testing.T, r api.Result, want string) {
	t.Helper()
	if r.OK || !strings.Contains(r.Error, want) {
		t.Errorf("%s: ok %v, error %q; want a refusal saying %q", r.Target, r.OK, r.Error, want)
	}
}

func sameExpiry(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !sameTime(got, want) {
		t.Errorf("%s expires %v, want %v", what, got, want)
	}
}
