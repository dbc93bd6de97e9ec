package top

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/hbf-firewall/hbf/internal/api"
)

// fakeAPI answers as a daemon would, from what the test sets.
type fakeAPI struct {
	mu     sync.Mutex
	status api.Status
	top    api.Top
	events []string
	down   bool
	why    api.Why
}

var errDown = errors.New("dial unix /run/hbf.sock: connect: connection refused")

func (f *fakeAPI) Status(context.Context) (api.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return api.Status{}, errDown
	}
	return f.status, nil
}

func (f *fakeAPI) Top(_ context.Context, n int) (api.Top, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	top := f.top
	top.Sources = top.Sources[:min(n, len(top.Sources))]
	return top, nil
}

func (f *fakeAPI) Why(_ context.Context, a netip.Addr) (api.Why, error) {
	w := f.why
	w.Addr = a
	return w, nil
}

func (f *fakeAPI) Events(_ context.Context, _ bool, fn func([]byte) error) error {
	for _, e := range f.events {
		if err := fn([]byte(e)); err != nil {
			return err
		}
	}
	return nil
}

// set makes the daemon's next answers: counters moved by step packets
// dropped per look, and the sources given.
func (f *fakeAPI) set(counters map[string]uint64, sources ...api.TopSource) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = api.Status{Uptime: "1h0m0s", Settings: map[string]string{"mode": "enforce"}, Counters: counters,
		Interfaces: []api.Interface{{Name: "eth0", Hook: "xdp", Mode: "native"}}}
	f.top = api.Top{Sources: sources}
}

func src(p, origin string, packets uint64, expires time.Time) api.TopSource {
	return api.TopSource{Prefix: netip.MustParsePrefix(p), Origins: strings.Split(origin, ","), Packets: packets, Expires: expires}
}

// driver runs a model's commands as Bubble Tea would, but for the ticks:
// each look is taken when the test says.
type driver struct {
	t *testing.T
	m Model
}

func newDriver(t *testing.T, f *fakeAPI) *driver {
	m := New(context.Background(), f, Options{Interval: time.Second, Sources: 100})
	d := &driver{t: t, m: m}
	d.send(tea.WindowSizeMsg{Width: 80, Height: 24})
	return d
}

func (d *driver) send(msg tea.Msg) tea.Cmd {
	m, cmd := d.m.Update(msg)
	d.m = m.(Model)
	return cmd
}

// look takes a look now, at a time at, as a tick would.
func (d *driver) look(at time.Time) {
	msg := d.m.look()().(lookMsg)
	msg.s.at = at
	d.send(msg)
}

func (d *driver) key(k string) {
	switch k {
	case "up":
		d.send(tea.KeyMsg{Type: tea.KeyUp})
	case "down":
		d.send(tea.KeyMsg{Type: tea.KeyDown})
	case "enter":
		d.send(tea.KeyMsg{Type: tea.KeyEnter})
	default:
		if cmd := d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}); cmd != nil {
			if msg, ok := cmd().(whyMsg); ok {
				d.send(msg)
			}
		}
	}
}

func (d *driver) screen() string {
	d.t.Helper()
	v := d.m.View()
	lines := strings.Split(v, "\n")
	if len(lines) != d.m.height {
		d.t.Errorf("the view has %d lines, want the terminal's %d:\n%s", len(lines), d.m.height, v)
	}
	for _, l := range lines {
		if len([]rune(l)) > d.m.width {
			d.t.Errorf("a line wider than the terminal's %d columns: %q", d.m.width, l)
		}
	}
	return v
}

func wantIn(t *testing.T, screen string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(screen, w) {
			t.Errorf("the screen lacks %q:\n%s", w, screen)
		}
	}
}

func wantNotIn(t *testing.T, screen string, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(screen, w) {
			t.Errorf("the screen shows %q:\n%s", w, screen)
		}
	}
}

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func TestViewShowsRatesSourcesAndEvents(t *testing.T) {
	f := &fakeAPI{}
	d := newDriver(t, f)
	f.set(map[string]uint64{"packets": 1000, "packets_passed": 900, "dropped_blocked": 100, "new_connections": 10})
	d.look(t0)
	wantIn(t, d.screen(), "hbf top", "enforce", "up 1h0m0s", "eth0 native XDP", "rates from the second look")

	later := time.Now().Add(time.Hour)
	f.set(map[string]uint64{"packets": 3000, "packets_passed": 1900, "dropped_blocked": 1100, "new_connections": 30,
		"scans_detected": 1, "scan_blocks": 1},
		src("192.0.2.56/32", "scan", 600, later), src("198.51.100.0/24", "file", 400, time.Time{}))
	d.look(t0.Add(2 * time.Second))
	d.send(eventMsg{gen: 1, line: "10:00:01: Port scan detected: 192.0.2.56 -> 10.0.0.5 on ports 80,81,82,83"})
	screen := d.screen()
	// Per second over the 2 s between the looks: 1000 packets, 500 passed, 500 dropped.
	wantIn(t, screen, "last 2s", " 1000 ", " 500 ", "dropped/s by reason: blocked 500",
		"192.0.2.56/32", "scan", "198.51.100.0/24", "file", "never", "59m",
		"Port scan detected: 192.0.2.56 -> 10.0.0.5 on ports 80,81,82,83")
	if strings.Index(screen, "192.0.2.56/32") > strings.Index(screen, "198.51.100.0/24") {
		t.Error("the busier source is not first")
	}
}

// Sort keys reorder the sources; the origin and address filters narrow
// them; the selection's why is the daemon's.
func TestKeysSortFilterAndAskWhy(t *testing.T) {
	f := &fakeAPI{why: api.Why{Verdict: "blocked", Blocks: []api.Block{{Prefix: netip.MustParsePrefix("203.0.113.9/32"),
		Origin: "manual", Reason: "by hand", Packets: 7}}}}
	d := newDriver(t, f)
	soon, later := time.Now().Add(10*time.Minute), time.Now().Add(2*time.Hour)
	f.set(nil, src("192.0.2.56/32", "scan", 0, later), src("203.0.113.9/32", "manual", 0, soon),
		src("2001:db8:bad::/48", "crowdsec:cscli", 0, later))
	d.look(t0)
	f.set(nil, src("192.0.2.56/32", "scan", 500, later), src("203.0.113.9/32", "manual", 7, soon),
		src("2001:db8:bad::/48", "crowdsec:cscli", 90, later))
	d.look(t0.Add(time.Second))
	order := func() []string {
		var out []string
		for _, r := range d.m.rows() {
			out = append(out, r.Source)
		}
		return out
	}
	if got := strings.Join(order(), " "); got != "192.0.2.56/32 2001:db8:bad::/48 203.0.113.9/32" {
		t.Errorf("by drops: %s", got)
	}
	d.key("s") // total
	d.key("s") // source
	if got := strings.Join(order(), " "); got != "192.0.2.56/32 203.0.113.9/32 2001:db8:bad::/48" {
		t.Errorf("by source: %s", got)
	}
	d.key("s") // left
	if got := order()[0]; got != "203.0.113.9/32" {
		t.Errorf("by time left, first %s, want the one ending soonest", got)
	}
	wantIn(t, d.screen(), "[s]ort left", "LEFT*")

	d.key("o") // scan
	if got := order(); len(got) != 1 || got[0] != "192.0.2.56/32" {
		t.Errorf("origin scan: %v", got)
	}
	for range 5 { // limit, manual, file, fleet, crowdsec
		d.key("o")
	}
	if got := order(); len(got) != 1 || got[0] != "2001:db8:bad::/48" {
		t.Errorf("origin crowdsec: %v", got)
	}
	d.key("o") // fail2ban
	d.key("o") // all again
	d.key("/")
	for _, r := range "203.0.113.0/24" {
		d.key(string(r))
	}
	wantIn(t, d.screen(), "address or CIDR: 203.0.113.0/24_")
	d.key("enter")
	if got := order(); len(got) != 1 || got[0] != "203.0.113.9/32" {
		t.Errorf("address 203.0.113.0/24: %v", got)
	}
	d.key("w")
	wantIn(t, d.screen(), "WHY 203.0.113.9: blocked", "blocked 203.0.113.9/32 by manual (by hand)")
	d.key("w")
	wantNotIn(t, d.screen(), "WHY")
}

// The daemon gone: the screen says so and keeps what it showed; back, the
// view goes on. Paused, nothing moves.
func TestDaemonStoppedIsShownAndTheViewRecovers(t *testing.T) {
	f := &fakeAPI{}
	d := newDriver(t, f)
	f.set(nil, src("192.0.2.56/32", "scan", 10, time.Time{}))
	d.look(t0)
	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	d.look(t0.Add(time.Second))
	wantIn(t, d.screen(), "daemon not answering since", "connection refused", "192.0.2.56/32")
	f.mu.Lock()
	f.down = false
	f.mu.Unlock()
	f.set(nil, src("192.0.2.56/32", "scan", 20, time.Time{}), src("192.0.2.57/32", "scan", 5, time.Time{}))
	d.look(t0.Add(2 * time.Second))
	screen := d.screen()
	wantNotIn(t, screen, "not answering")
	wantIn(t, screen, "192.0.2.57/32")

	d.key("p")
	f.set(nil, src("192.0.2.58/32", "limit", 5, time.Time{}))
	d.look(t0.Add(3 * time.Second))
	screen = d.screen()
	wantIn(t, screen, "PAUSED", "192.0.2.57/32")
	wantNotIn(t, screen, "192.0.2.58/32")
}

// A small terminal still gets every part, cut to its size; q quits.
func TestViewFitsSmallTerminalsAndQuits(t *testing.T) {
	f := &fakeAPI{}
	d := newDriver(t, f)
	var sources []api.TopSource
	for i := range 50 {
		sources = append(sources, src(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}).String()+"/32", "scan", uint64(i), time.Time{}))
	}
	f.set(nil, sources...)
	d.look(t0)
	d.look(t0.Add(time.Second))
	for i := range 30 {
		d.send(eventMsg{gen: 1, line: "10:00:01: Blocked 192.0.2." + string(rune('0'+i%10)) + " for 1h0m0s: port scan"})
	}
	for _, size := range []tea.WindowSizeMsg{{Width: 80, Height: 24}, {Width: 60, Height: 12}, {Width: 200, Height: 60}} {
		d.send(size)
		wantIn(t, d.screen(), "SOURCE", "EVENTS", "[q]uit")
	}
	d.key("?")
	wantIn(t, d.screen(), "nothing here changes the firewall")
	if cmd := d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")}); cmd == nil || cmd() != tea.Quit() {
		t.Error("q does not quit")
	}
}

// The snapshot: two looks an interval apart, every source, the events
// without new connections, as text and as JSON.
func TestSnapshot(t *testing.T) {
	f := &fakeAPI{events: []string{
		`{"time":"2026-12-07T10:00:00Z","event":"connection","src":"192.0.2.9","src_port":5000,"dst":"10.0.0.5","dst_port":80}`,
		`{"time":"2026-12-07T10:00:01Z","event":"portscan","src":"192.0.2.56","dst":"10.0.0.5","ports":[80,81,82,83]}`,
	}}
	f.set(map[string]uint64{"packets": 10}, src("192.0.2.56/32", "scan", 100, time.Time{}))
	snap, err := Take(context.Background(), f, Options{Interval: 10 * time.Millisecond, Sources: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Sources) != 1 || len(snap.Events) != 1 {
		t.Fatalf("snapshot %+v, want the source and the scan event", snap)
	}
	var text strings.Builder
	if err := snap.Text(&text, 100); err != nil {
		t.Fatal(err)
	}
	wantIn(t, text.String(), "192.0.2.56/32", "Port scan detected: 192.0.2.56 -> 10.0.0.5 on ports 80,81,82,83")
	wantNotIn(t, text.String(), "New connection", "[q]uit", "\x1b[")
	b, err := json.Marshal(snap)
	if err != nil || !strings.Contains(string(b), `"sources":[{"source":"192.0.2.56/32"`) {
		t.Errorf("JSON %s, %v", b, err)
	}
}

// Keys typed faster than the terminal is read come in one message: each
// counts.
func TestKeysInOneMessageEachCount(t *testing.T) {
	d := newDriver(t, &fakeAPI{})
	d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("sso")})
	if d.m.sort != BySource || d.m.filter.Origin != "scan" {
		t.Errorf("after \"sso\": sort %s, origin %q; want source and scan", d.m.sort, d.m.filter.Origin)
	}
}

// Sources a limit's :drop throttles have no block: the limit's count of
// drops shows as one row, origin limit.
func TestLimitDropsShowAsARow(t *testing.T) {
	f := &fakeAPI{}
	d := newDriver(t, f)
	limits := func(dropped uint64) {
		f.set(nil)
		f.status.Limits = []api.LimitStatus{
			{Limit: "22/tcp=3/1m", Port: 22, Proto: "tcp", Action: "drop", Dropped: dropped},
			{Limit: "80/tcp=100/1m", Port: 80, Proto: "tcp", Action: "block", Dropped: 0},
		}
	}
	limits(10)
	d.look(t0)
	limits(25)
	d.look(t0.Add(time.Second))
	rows := d.m.rows()
	if len(rows) != 1 || rows[0].Source != "over 22/tcp" || rows[0].Origin != "limit" || rows[0].Interval != 15 || rows[0].Total != 25 {
		t.Fatalf("rows %+v, want one for the :drop limit, 15 in the interval of 25", rows)
	}
	wantIn(t, d.screen(), "over 22/tcp", "limit")
}
