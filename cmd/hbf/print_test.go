package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
)

// fakeDaemon answers the API with what a test gives it.
type fakeDaemon struct {
	changes []string // verb and targets, as asked
	blocks  []api.Block
	allows  []api.Allow
	why     api.Why
	status  api.Status
	top     api.Top
	events  []string
	mode    string
}

func (f *fakeDaemon) change(verb string, req api.ChangeRequest) []api.Result {
	var out []api.Result
	for _, t := range req.Targets {
		f.changes = append(f.changes, strings.TrimSpace(verb+" "+t+" "+req.Origin))
		p, err := netip.ParsePrefix(t)
		if err != nil {
			out = append(out, api.Result{Target: t, Error: `"` + t + `" is not an IP or CIDR`})
			continue
		}
		out = append(out, api.Result{Target: t, Prefix: p, OK: true})
	}
	return out
}

func (f *fakeDaemon) Block(_ context.Context, _ api.Caller, r api.ChangeRequest) []api.Result {
	return f.change("block", r)
}
func (f *fakeDaemon) Unblock(_ context.Context, _ api.Caller, r api.ChangeRequest) []api.Result {
	return f.change("unblock", r)
}
func (f *fakeDaemon) Allow(_ context.Context, _ api.Caller, r api.ChangeRequest) []api.Result {
	return f.change("allow", r)
}
func (f *fakeDaemon) Disallow(_ context.Context, _ api.Caller, r api.ChangeRequest) []api.Result {
	return f.change("disallow", r)
}
func (f *fakeDaemon) Blocks(_ context.Context, fn func(api.Block) error) error {
	for _, b := range f.blocks {
		if err := fn(b); err != nil {
			return err
		}
	}
	return nil
}
func (f *fakeDaemon) Allows(context.Context) ([]api.Allow, error)      { return f.allows, nil }
func (f *fakeDaemon) Why(context.Context, netip.Addr) (api.Why, error) { return f.why, nil }
func (f *fakeDaemon) Status(context.Context) (api.Status, error)       { return f.status, nil }
func (f *fakeDaemon) Top(context.Context, int) (api.Top, error)        { return f.top, nil }
func (f *fakeDaemon) Fleet(context.Context) (api.FleetStatus, error) {
	return api.FleetStatus{}, api.ErrNoFleet
}
func (f *fakeDaemon) Reload(context.Context, api.Caller) error {
	return errors.New("reload refused: a test")
}
func (f *fakeDaemon) Stop(context.Context, api.Caller) error      { return nil }
func (f *fakeDaemon) Uninstall(context.Context, api.Caller) error { return nil }
func (f *fakeDaemon) SetMode(_ context.Context, _ api.Caller, m string) error {
	f.mode = m
	return nil
}
func (f *fakeDaemon) Events(_ context.Context, _ bool, fn func(json.RawMessage) error) error {
	for _, e := range f.events {
		if err := fn(json.RawMessage(e)); err != nil {
			return err
		}
	}
	return nil
}

// serve runs the fake on a socket of its own and returns the socket.
func (f *fakeDaemon) serve(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "hbf.sock")
	ln, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		api.Serve(ctx, ln, f, api.DefaultTimeouts)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return sock
}

// runClient runs an hbf client command against the socket.
func runClient(sock string, args ...string) (int, string, string) {
	var out, errs bytes.Buffer
	e := env{getenv: func(string) string { return "" }, stdout: &out, stderr: &errs}
	code := run(context.Background(), append(args, "--socket", sock), e)
	return code, out.String(), errs.String()
}

var (
	created = time.Date(2026, 11, 27, 15, 28, 7, 0, time.UTC)
	seen    = time.Date(2026, 11, 27, 15, 28, 6, 910_000_000, time.UTC)
)

func init() { time.Local = time.UTC } // the tables print local times

func TestChangeCommandsPrintEachResult(t *testing.T) {
	f := &fakeDaemon{}
	sock := f.serve(t)
	code, out, _ := runClient(sock, "block", "198.51.100.7/32", "203.0.113.0/24", "--for", "2h")
	if code != 0 || out != "blocked 198.51.100.7\nblocked 203.0.113.0/24\n" {
		t.Errorf("block: exit %d, %q", code, out)
	}
	code, out, errs := runClient(sock, "allow", "198.51.100.7/32", "nonsense")
	if code != 1 || out != "allowed 198.51.100.7\n" || !strings.Contains(errs, `hbf: "nonsense" is not an IP or CIDR`) {
		t.Errorf("a refusal: exit %d, %q, %q", code, out, errs)
	}
	code, out, _ = runClient(sock, "unblock", "198.51.100.7/32", "-o", "json")
	var rs []api.Result
	if code != 0 || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 || !rs[0].OK {
		t.Errorf("unblock -o json: exit %d, %q", code, out)
	}
	if code, _, errs := runClient(sock, "unblock"); code != 2 || !strings.Contains(errs, "--all for every manual and scan block") {
		t.Errorf("unblock without targets: exit %d, %q", code, errs)
	}
	if want := []string{"block 198.51.100.7/32", "block 203.0.113.0/24", "allow 198.51.100.7/32", "allow nonsense", "unblock 198.51.100.7/32"}; strings.Join(f.changes, ";") != strings.Join(want, ";") {
		t.Errorf("the daemon was asked %v", f.changes)
	}
	runClient(sock, "block", "--origin", "fail2ban:sshd", "198.51.100.9")
	runClient(sock, "unblock", "--origin", "fail2ban:sshd", "198.51.100.9")
	if got := f.changes[len(f.changes)-2:]; got[0] != "block 198.51.100.9 fail2ban:sshd" || got[1] != "unblock 198.51.100.9 fail2ban:sshd" {
		t.Errorf("--origin: the daemon got %q", got)
	}
}

func TestListPrintsATableOrJSON(t *testing.T) {
	f := &fakeDaemon{blocks: []api.Block{
		{Prefix: netip.MustParsePrefix("192.0.2.66/32"), Origin: "scan", Reason: "port scan", Created: created,
			Expires: created.Add(time.Hour), Packets: 212, Ports: []api.PortSeen{{Port: 22}, {Port: 80}}},
		{Prefix: netip.MustParsePrefix("10.66.0.0/16"), Origin: "file", Reason: "blocklist", Source: "/etc/hbf/blocklist.txt", Packets: 9},
	}, allows: []api.Allow{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Origin: "manual", Reason: "office", Created: created},
		{Prefix: netip.MustParsePrefix("198.51.100.9/32"), Origin: "member", Reason: "an address of b, a member of the fleet", Unenforced: true}}}
	sock := f.serve(t)
	_, out, _ := runClient(sock, "list")
	want := `PREFIX        ORIGIN  REASON                            CREATED              EXPIRES              DROPPED  PORTS
192.0.2.66    scan    port scan                         2026-11-27 15:28:07  2026-11-27 16:28:07  212      22,80
10.66.0.0/16  file    blocklist /etc/hbf/blocklist.txt  -                    never                9        -
`
	if out != want {
		t.Errorf("list:\n%s\nwant:\n%s", out, want)
	}
	_, out, _ = runClient(sock, "list", "-o", "json")
	var blocks []api.Block
	if err := json.Unmarshal([]byte(out), &blocks); err != nil || len(blocks) != 2 || blocks[0].Packets != 212 {
		t.Errorf("list -o json: %v, %q", err, out)
	}
	_, out, _ = runClient(sock, "list", "--allowed")
	if !strings.Contains(out, "203.0.113.0/24  manual  office") || !strings.Contains(out, "2026-11-27 15:28:07  never") ||
		!strings.Contains(out, "198.51.100.9    member  an address of b, a member of the fleet (not in the kernel: its allowlist is full)") {
		t.Errorf("list --allowed:\n%s", out)
	}
}

func TestWhyExplains(t *testing.T) {
	f := &fakeDaemon{why: api.Why{Addr: netip.MustParseAddr("192.0.2.66"), Verdict: "blocked", Blocks: []api.Block{
		{Prefix: netip.MustParsePrefix("192.0.2.66/32"), Origin: "scan", Reason: "port scan", Created: created,
			Expires: created.Add(time.Hour), Packets: 212, Ports: []api.PortSeen{{Port: 22, Seen: seen}}},
	}}}
	_, out, _ := runClient(f.serve(t), "why", "192.0.2.66")
	want := `192.0.2.66: blocked
  blocked by 192.0.2.66 (scan): port scan; since 2026-11-27 15:28:07, until 2026-11-27 16:28:07; 212 packets dropped
    scan evidence: 22 at 15:28:06.910
`
	if out != want {
		t.Errorf("why:\n%s\nwant:\n%s", out, want)
	}
	if code, _, errs := runClient(f.serve(t), "why", "192.0.2.300"); code != 2 || !strings.Contains(errs, `"192.0.2.300" is not an IP address`) {
		t.Errorf("why of nonsense: exit %d, %q", code, errs)
	}
}

func TestStatusPrintsEverySection(t *testing.T) {
	f := &fakeDaemon{status: api.Status{Version: "v1", PID: 42, Uptime: "1m0s", Store: "ok",
		Interfaces: []api.Interface{{Name: "eth0", Mode: "native"}},
		Lists:      []api.ListStatus{{Source: "/etc/hbf/blocklist.txt", Entries: 3, Loaded: created, Status: "ok"}},
		Settings:   map[string]string{"mode": "enforce", "max_ports": "3"},
		Counters:   map[string]uint64{"packets": 10, "new_connections": 2},
		Entries:    map[string]int{"blocks_scan": 1}}}
	sock := f.serve(t)
	_, out, _ := runClient(sock, "status")
	for _, line := range []string{"version    v1", "interface  eth0 (native XDP)",
		"list       /etc/hbf/blocklist.txt  3 entries, loaded 2026-11-27 15:28:07: ok",
		"setting    max_ports               3", "counter    new_connections         2", "entries    blocks_scan             1"} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("status lacks %q:\n%s", line, out)
		}
	}
	if _, out, _ := runClient(sock, "mode"); out != "enforce\n" {
		t.Errorf("mode: %q", out)
	}
	if code, out, _ := runClient(sock, "mode", "monitor"); code != 0 || out != "mode: monitor\n" || f.mode != "monitor" {
		t.Errorf("mode monitor: exit %d, %q, daemon's %q", code, out, f.mode)
	}
}

func TestEventsAsTextOrJSON(t *testing.T) {
	line := `{"time":"2026-11-27T15:28:05Z","event":"connection","iface":"eth0","src":"192.0.2.56","src_port":5973,"dst":"10.0.0.5","dst_port":80}`
	f := &fakeDaemon{events: []string{line}}
	sock := f.serve(t)
	if _, out, _ := runClient(sock, "events"); out != "2026-11-27 15:28:05: New connection: 192.0.2.56:5973 -> 10.0.0.5:80\n" {
		t.Errorf("events: %q", out)
	}
	if _, out, _ := runClient(sock, "events", "-o", "json"); out != line+"\n" {
		t.Errorf("events -o json: %q", out)
	}
}

func TestClientErrorsSayWhatToDo(t *testing.T) {
	f := &fakeDaemon{}
	sock := f.serve(t)
	if code, _, errs := runClient(sock, "reload"); code != 1 || !strings.Contains(errs, "hbf: reload refused: a test") {
		t.Errorf("a refused reload: exit %d, %q", code, errs)
	}
	if code, _, errs := runClient(sock, "status", "-o", "yaml"); code != 2 || !strings.Contains(errs, `-o "yaml": use table or json`) {
		t.Errorf("-o yaml: exit %d, %q", code, errs)
	}
	none := filepath.Join(t.TempDir(), "none.sock")
	code, _, errs := runClient(none, "status")
	if code != 1 || !strings.Contains(errs, "no hbf daemon at "+none+": start one with `hbf daemon`, or name its socket with --socket") {
		t.Errorf("no daemon: exit %d, %q", code, errs)
	}
}

// hbf top, its output not a terminal: one snapshot, as text or JSON.
func TestTopPrintsASnapshot(t *testing.T) {
	f := &fakeDaemon{status: api.Status{Uptime: "1h0m0s", Settings: map[string]string{"mode": "enforce"},
		Counters: map[string]uint64{"packets": 10}},
		top: api.Top{Sources: []api.TopSource{{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Origins: []string{"scan"},
			Reason: "port scan", Packets: 42}}},
		events: []string{`{"time":"2026-11-27T15:28:05Z","event":"portscan","src":"198.51.100.7","dst":"10.0.0.5","ports":[80,81,82,83]}`}}
	sock := f.serve(t)
	code, out, errs := runClient(sock, "top", "--interval", "100ms")
	if code != 0 || !strings.Contains(out, "198.51.100.7/32") || !strings.Contains(out, "scan") ||
		!strings.Contains(out, "15:28:05: Port scan detected: 198.51.100.7 -> 10.0.0.5 on ports 80,81,82,83") {
		t.Errorf("top: exit %d, %s%s", code, out, errs)
	}
	code, out, _ = runClient(sock, "top", "--interval", "100ms", "-o", "json")
	var snap struct {
		Sources []struct {
			Source string `json:"source"`
			Total  uint64 `json:"dropped_total"`
		} `json:"sources"`
		Events []json.RawMessage `json:"events"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &snap) != nil || len(snap.Sources) != 1 || snap.Sources[0].Total != 42 ||
		len(snap.Events) != 1 {
		t.Errorf("top -o json: exit %d, %s", code, out)
	}
	if code, _, errs := runClient(sock, "top", "--interval", "1ms"); code != 2 || !strings.Contains(errs, "--interval 1ms: must be at least 100ms") {
		t.Errorf("top --interval 1ms: exit %d, %s", code, errs)
	}
}
