package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// pane is a tmux session of the test's own, a fixed size, running a shell.
type pane struct {
	t      testing.TB
	server string // tmux -L: a server of the test's own
}

func startPane(t testing.TB, width, height int) *pane {
	t.Helper()
	testenv.RequireCommand(t, "tmux")
	p := &pane{t: t, server: randomName("hbftop")}
	p.tmux("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", fmt.Sprint(width), "-y", fmt.Sprint(height), "sh")
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", p.server, "kill-server").Run() })
	return p
}

func (p *pane) tmux(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", p.server}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

// keys types into the pane, as tmux send-keys names them.
func (p *pane) keys(keys ...string) { p.tmux(append([]string{"send-keys", "-t", "top"}, keys...)...) }

func (p *pane) screen() string { return p.tmux("capture-pane", "-p", "-t", "top") }

// waitFor waits until the screen holds every one of want, and returns it.
func (p *pane) waitFor(what string, within time.Duration, want ...string) string {
	p.t.Helper()
	return p.waitUntil(what, within, func(s string) bool {
		for _, w := range want {
			if !strings.Contains(s, w) {
				return false
			}
		}
		return true
	})
}

func (p *pane) waitUntil(what string, within time.Duration, ok func(string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := p.screen()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("after %v, the screen does not show %s:\n%s", within, what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lineOf is the screen's first line holding s, or "".
func lineOf(screen, s string) string {
	for l := range strings.SplitSeq(screen, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// hbf top in a terminal (tmux, 100×30): a scanner shows as a dropped
// source with origin scan, and its scan event with its ports, within two
// refreshes; a sort key and the filters change what is listed; a daemon
// stopped is said on screen and the view recovers when it returns; q
// exits 0 with the shell back.
func TestTopInATerminal(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"scanner", "client"}})
	serveHTTP(t, lab.Host, 8080)
	scanner, client := lab.Peers["scanner"], lab.Peers["client"]
	d := startDaemon(t, lab, "--log-format", "json")
	p := startPane(t, 100, 30)
	const refresh = time.Second
	p.keys(fmt.Sprintf("%s top --socket %s --interval %s; echo exit=$?", hbfBin, d.socket(), refresh), "Enter")
	p.waitFor("the first rates", 10*time.Second, "hbf top", "enforce", "last 1s", "SOURCE", "EVENTS")

	// A manual block whose source keeps sending, for two hours.
	d.mustCLI("block", client.Addr4.String(), "--for", "2h", "--reason", "e2e")
	hping(t, client, lab.Host.Addr4.String(), 400)()
	p.waitFor("the client's drops", 2*refresh+time.Second, client.Addr4.String()+"/32")

	nmap(t, scanner, lab.Host.Addr4, "8080-8087", "-sS", "-T5", "--max-retries", "0")
	d.scanEvent(scanner.Addr4)
	seen := time.Now()
	screen := p.waitUntil("the scanner, dropped, and its scan", 2*refresh+time.Second, func(s string) bool {
		return strings.Contains(lineOf(s, scanner.Addr4.String()+"/32"), "scan") &&
			strings.Contains(s, "Port scan detected: "+scanner.Addr4.String())
	})
	t.Logf("the scan event to the scanner on screen: %v\n%s", time.Since(seen).Round(time.Millisecond), screen)
	if !strings.Contains(lineOf(screen, "Port scan detected: "+scanner.Addr4.String()), "-> "+lab.Host.Addr4.String()+" on ports 808") {
		t.Errorf("the scan event lacks its ports:\n%s", screen)
	}
	before := func(s, a, b string) bool { return strings.Index(s, a+"/32") < strings.Index(s, b+"/32") }
	if !before(screen, client.Addr4.String(), scanner.Addr4.String()) {
		t.Errorf("by drops, the client (400 dropped) is not above the scanner:\n%s", screen)
	}

	// Sorted by time left: the scan block (1h) ends before the client's (2h).
	p.keys("s", "s", "s")
	screen = p.waitFor("the sort by time left", 2*refresh, "[s]ort left")
	if !before(screen, scanner.Addr4.String(), client.Addr4.String()) {
		t.Errorf("by time left, the scanner is not above the client:\n%s", screen)
	}
	// One origin: scan.
	p.keys("o")
	screen = p.waitFor("the scan origin's sources", 2*refresh, "[o]rigin scan")
	if strings.Contains(screen, client.Addr4.String()+"/32") || !strings.Contains(screen, scanner.Addr4.String()+"/32") {
		t.Errorf("with origin scan:\n%s", screen)
	}
	p.keys("o", "o", "o", "o", "o", "o", "o") // round to every origin
	p.keys("/", client.Addr4.String()+"/32", "Enter")
	screen = p.waitFor("the address filter", 2*refresh, "[/]address "+client.Addr4.String())
	if !strings.Contains(screen, client.Addr4.String()+"/32") || strings.Contains(screen, scanner.Addr4.String()+"/32") {
		t.Errorf("filtered to the client's address:\n%s", screen)
	}

	// The daemon stops, and comes back.
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	p.waitFor("the daemon's absence", 3*refresh, "daemon not answering")
	d.restart(lab, "--log-format", "json")
	p.waitUntil("the view back", 5*refresh, func(s string) bool {
		return !strings.Contains(s, "not answering") && strings.Contains(s, "up ")
	})

	p.keys("q")
	screen = p.waitFor("the shell again", 5*time.Second, "exit=0")
	if strings.Contains(screen, "SOURCE") {
		t.Errorf("the terminal was not restored:\n%s", screen)
	}
}

// hbf top piped: one snapshot, two looks an interval apart, as text and
// as JSON, with the blocked source and its drops.
func TestTopSnapshot(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client"}})
	serveHTTP(t, lab.Host, 8080)
	client := lab.Peers["client"]
	d := startDaemon(t, lab)
	// Watching starts with the first look: drops from then on are noted.
	d.mustCLI("top", "--interval", "100ms")
	d.mustCLI("block", client.Addr4.String(), "--reason", "e2e")
	hping(t, client, lab.Host.Addr4.String(), 100)()

	out := d.mustCLI("top", "--interval", "500ms")
	if l := lineOf(out, client.Addr4.String()+"/32"); !strings.Contains(l, "manual") || !strings.Contains(l, "100") {
		t.Errorf("the snapshot's line of the client %q, want origin manual and its 100 drops:\n%s", l, out)
	}
	for _, w := range []string{"hbf top", "per second", "EVENTS", "Blocked " + client.Addr4.String()} {
		if !strings.Contains(out, w) {
			t.Errorf("the snapshot lacks %q:\n%s", w, out)
		}
	}
	var snap struct {
		Rates struct {
			Span time.Duration `json:"span"`
		} `json:"rates"`
		Sources []struct {
			Prefix netip.Prefix `json:"prefix"`
			Origin string       `json:"origin"`
			Total  uint64       `json:"dropped_total"`
		} `json:"sources"`
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal([]byte(d.mustCLI("top", "-o", "json", "--interval", "200ms")), &snap); err != nil {
		t.Fatal(err)
	}
	if len(snap.Sources) != 1 || snap.Sources[0].Origin != "manual" || snap.Sources[0].Total != 100 ||
		snap.Rates.Span < 200*time.Millisecond || len(snap.Events) == 0 {
		t.Errorf("hbf top -o json: %+v", snap)
	}
}
