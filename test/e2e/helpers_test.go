// Package e2e runs the hbf binary in network-namespace labs and drives it
// with real clients: curl, nmap, and Go dialers.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

var hbfBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hbf-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Others than root run it too (the permission tests).
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hbfBin = filepath.Join(dir, "hbf")
	build := exec.Command("go", "build", "-o", hbfBin, "../../cmd/hbf")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build hbf:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newLab(t testing.TB, opts netlab.Options) *netlab.Lab {
	t.Helper()
	testenv.RequirePrivileged(t)
	testenv.RequireCommand(t, "ip")
	testenv.RequireCommand(t, "nsenter")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lab, err := netlab.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	return lab
}

// serveHTTP answers HTTP on the host's ports, IPv4 and IPv6.
func serveHTTP(t testing.TB, ns *netlab.NS, ports ...int) {
	t.Helper()
	for _, port := range ports {
		ln, err := ns.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, "hello from the host\n")
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
}

type daemonProc struct {
	t        testing.TB
	cmd      *exec.Cmd
	pinPath  string
	stateDir string
	ns       *netlab.NS

	mu      sync.Mutex
	lines   []string
	onLine  func(line string, at time.Time) // called as each line arrives
	stalled chan struct{}                   // closed to resume reading stdout
	stderr  bytes.Buffer
	done    chan struct{}
	err     error
}

func randomName(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// startDaemon runs `hbf daemon` on the host's interface with its own pin
// path and state folder, and waits until it protects the interface.
func startDaemon(t testing.TB, lab *netlab.Lab, args ...string) *daemonProc {
	t.Helper()
	return waitReady(t, tryDaemon(t, lab, args...))
}

// waitReady waits until the daemon answers hbf status: its API serves
// once the program is attached, the lists loaded and the store open.
func waitReady(t testing.TB, d *daemonProc) *daemonProc {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for !d.answers() {
		select {
		case <-d.done:
			t.Fatalf("hbf daemon exited early (%v):\n%s", d.err, d.stderrText())
		case <-deadline:
			t.Fatalf("hbf daemon not ready after 20s:\n%s", d.stderrText())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return d
}

// answers reports whether hbf status -o json gets the daemon's status.
func (d *daemonProc) answers() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, hbfBin, "status", "-o", "json", "--socket", d.socket()).Output()
	var st api.Status
	return err == nil && json.Unmarshal(out, &st) == nil && st.PID != 0
}

// tryDaemon starts `hbf daemon` without waiting for it.
func tryDaemon(t testing.TB, lab *netlab.Lab, args ...string) *daemonProc {
	t.Helper()
	return tryDaemonAt(t, lab, "/sys/fs/bpf/"+randomName("hbftest"), t.TempDir(), args...)
}

// tryDaemonAt starts `hbf daemon` with the given pin path and state folder.
func tryDaemonAt(t testing.TB, lab *netlab.Lab, pinPath, stateDir string, args ...string) *daemonProc {
	t.Helper()
	return tryDaemonBin(t, lab, hbfBin, pinPath, stateDir, args...)
}

// tryDaemonBin is tryDaemonAt with another build of hbf.
func tryDaemonBin(t testing.TB, lab *netlab.Lab, bin, pinPath, stateDir string, args ...string) *daemonProc {
	t.Helper()
	return tryDaemonIn(t, lab.Host, bin, pinPath, stateDir, args...)
}

// startDaemonOn runs hbf daemon on the interface of ns, another host of
// the lab, and waits until it protects it.
func startDaemonOn(t testing.TB, ns *netlab.NS, args ...string) *daemonProc {
	t.Helper()
	return waitReady(t, tryDaemonIn(t, ns, hbfBin, "/sys/fs/bpf/"+randomName("hbftest"), t.TempDir(), args...))
}

// tryDaemonIn starts a build of hbf daemon in ns without waiting for it.
func tryDaemonIn(t testing.TB, ns *netlab.NS, bin, pinPath, stateDir string, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{t: t, pinPath: pinPath, stateDir: stateDir, ns: ns, done: make(chan struct{})}
	// Tests remove enforcement on a clean stop unless they pass
	// --detach-on-exit=false to see it stay.
	full := append([]string{"daemon", "--config", os.DevNull, "--iface", netlab.Iface, "--pin-path", d.pinPath,
		"--state-dir", d.stateDir, "--socket", d.socket(), "--detach-on-exit"}, args...)
	d.start(ns.Command(context.Background(), bin, full...))
	return d
}

// start runs cmd, a daemon (or what runs one and passes its output and
// signals on, like a container engine), collecting its output.
func (d *daemonProc) start(cmd *exec.Cmd) {
	t := d.t
	t.Helper()
	d.cmd = cmd
	d.cmd.Stderr = lockedWriter{&d.mu, &d.stderr}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			if d.onLine != nil {
				d.onLine(sc.Text(), time.Now())
			}
			stalled := d.stalled
			d.mu.Unlock()
			if stalled != nil {
				<-stalled
			}
		}
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		if d.running() {
			d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.done:
			case <-time.After(10 * time.Second):
				d.cmd.Process.Kill()
				<-d.done
			}
		}
		os.RemoveAll(d.pinPath)
		if t.Failed() {
			t.Logf("hbf stdout:\n%s\nhbf stderr:\n%s", strings.Join(d.output(), "\n"), d.stderrText())
		}
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// socket is the daemon's API socket: in its state folder, so that daemons
// of parallel tests never meet.
func (d *daemonProc) socket() string { return filepath.Join(d.stateDir, "hbf.sock") }

// cli runs an hbf client command against this daemon; it returns the
// output and the exit code.
func (d *daemonProc) cli(args ...string) (string, int) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, hbfBin, append(args, "--socket", d.socket())...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	d.t.Fatalf("hbf %v: %v", args, err)
	return "", -1
}

// stallStdout stops reading the daemon's stdout, as a stuck pager or log
// collector would; the returned function resumes.
func (d *daemonProc) stallStdout() (resume func()) {
	ch := make(chan struct{})
	d.mu.Lock()
	d.stalled = ch
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		d.stalled = nil
		d.mu.Unlock()
		close(ch)
	}
}

func (d *daemonProc) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

func (d *daemonProc) stderrText() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

func (d *daemonProc) output() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.lines...)
}

// matching returns the event lines that match re.
func (d *daemonProc) matching(re *regexp.Regexp) []string {
	var out []string
	for _, l := range d.output() {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// waitLine waits for an event line matching re.
func (d *daemonProc) waitLine(re *regexp.Regexp) string {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := d.matching(re); len(m) > 0 {
			return m[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.t.Fatalf("no event line matches %s; got:\n%s", re, strings.Join(d.output(), "\n"))
	return ""
}

// waitLog waits for a line of the daemon's log matching re, and returns
// its submatches: hbf status answers as soon as the API serves, a moment
// before the daemon logs that it runs.
func (d *daemonProc) waitLog(re *regexp.Regexp) []string {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(d.stderrText()); m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.t.Fatalf("no log line matches %s; got:\n%s", re, d.stderrText())
	return nil
}

// stop sends SIGTERM and returns the exit error.
func (d *daemonProc) stop() error {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.t.Fatal("hbf daemon did not stop within 15s of SIGTERM")
	}
	return d.err
}

// wait waits for the daemon to exit by itself.
func (d *daemonProc) wait(timeout time.Duration) error {
	d.t.Helper()
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		d.t.Fatalf("hbf daemon still running after %v", timeout)
		return nil
	}
}

// metrics scrapes the daemon's /metrics from inside the host namespace.
func (d *daemonProc) metrics() string {
	d.t.Helper()
	resp, err := d.ns.HTTPClient().Get("http://127.0.0.1:9717/metrics")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatal(err)
	}
	return string(b)
}

// curl fetches from the host with the real client; it fails the test when
// the connection fails.
func curl(t *testing.T, ns *netlab.NS, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, "curl", "-sS", "-g", "--max-time", "5", url)
	if err != nil || !strings.Contains(out, "hello from the host") {
		t.Fatalf("curl %s from %s: %v: %s", url, ns.Role, err, out)
	}
}

// dialOutcome is what a scanner learns from one connection attempt.
func dialOutcome(ns *netlab.NS, addr netip.AddrPort, timeout time.Duration) string {
	return ns.Probe(context.Background(), addr, timeout)
}

type nmapRun struct {
	Hosts []struct {
		Ports []struct {
			ID    int `xml:"portid,attr"`
			State struct {
				State string `xml:"state,attr"`
			} `xml:"state"`
		} `xml:"ports>port"`
	} `xml:"host"`
}

// nmap scans target from ns and returns each port's state.
func nmap(t *testing.T, ns *netlab.NS, target netip.Addr, ports string, args ...string) map[int]string {
	t.Helper()
	testenv.RequireCommand(t, "nmap")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	full := append([]string{"-n", "-Pn", "-oX", "-", "-p", ports}, args...)
	if target.Is6() {
		full = append(full, "-6")
	}
	full = append(full, target.String())
	cmd := ns.Command(ctx, "nmap", full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nmap %v: %v: %s", full, err, stderr.String())
	}
	var run nmapRun
	if err := xml.Unmarshal(out, &run); err != nil {
		t.Fatalf("nmap output: %v\n%s", err, out)
	}
	states := map[int]string{}
	for _, h := range run.Hosts {
		for _, p := range h.Ports {
			states[p.ID] = p.State.State
		}
	}
	return states
}

// learned lists the ports whose state the scan found out: open or closed.
func learned(states map[int]string) []int {
	var out []int
	for port, s := range states {
		if s == "open" || s == "closed" {
			out = append(out, port)
		}
	}
	return out
}

// noXDP checks that nothing is attached to the host's interface any more.
func noXDP(t *testing.T, ns *netlab.NS) {
	t.Helper()
	out, err := ns.Run(context.Background(), "ip", "link", "show", netlab.Iface)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "xdp") {
		t.Errorf("an XDP program is still attached:\n%s", out)
	}
}

var timePrefix = `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: `

// line matches a whole event line: format is a regular expression, the
// args are quoted into it.
func line(format string, args ...any) *regexp.Regexp {
	quoted := make([]any, len(args))
	for i, a := range args {
		quoted[i] = regexp.QuoteMeta(fmt.Sprint(a))
	}
	return regexp.MustCompile(timePrefix + fmt.Sprintf(format, quoted...) + "$")
}

func hostPort(a netip.Addr, port int) netip.AddrPort { return netip.AddrPortFrom(a, uint16(port)) }

// quantileMs is the p-quantile of ds, in milliseconds.
func quantileMs(ds []time.Duration, p float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1000
}

// median is the middle of xs, the upper one of an even count.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
