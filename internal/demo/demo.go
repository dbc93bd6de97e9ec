// Package demo shows hbf at work in a throw-away lab: a protected host, a
// client and a scanner in network namespaces of their own. Nothing touches
// the machine's own interfaces, and the lab goes away on exit.
package demo

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
)

// Options for Run.
type Options struct {
	Exe      string // the hbf binary to run as the daemon
	Stdout   io.Writer
	MaxPorts int
	// Scanner: "nmap" (when installed) or "builtin", a TCP connect scanner.
	Scanner string
}

// The host's services, and the ports the scanner tries.
var (
	services  = []int{22, 80, 443}
	scanPorts = []int{21, 22, 23, 25, 53, 80, 110, 135, 139, 143, 443, 445, 993, 995, 1723, 3306, 3389, 5900, 8080, 8443}
)

// Run runs the demo; it returns when done or when ctx ends, lab removed.
func Run(ctx context.Context, o Options) error {
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root: it creates network namespaces and attaches XDP")
	}
	if o.Scanner == "" {
		o.Scanner = "builtin"
		if _, err := exec.LookPath("nmap"); err == nil {
			o.Scanner = "nmap"
		}
	}
	say := func(format string, args ...any) { fmt.Fprintf(o.Stdout, "\n==> "+format+"\n", args...) }

	say("building a lab: host %s, client %s, scanner %s (network namespaces, one Ethernet segment)",
		"192.0.2.1", "192.0.2.2", "192.0.2.3")
	lab, err := netlab.New(ctx, netlab.Options{Peers: []string{"client", "scanner"}})
	if err != nil {
		return err
	}
	defer func() {
		lab.Close()
		fmt.Fprintln(o.Stdout, "\n==> lab removed")
	}()
	host, client, scanner := lab.Host, lab.Peers["client"], lab.Peers["scanner"]

	for _, port := range services {
		ln, err := host.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello\n") })}
		go srv.Serve(ln)
		defer srv.Close()
	}

	var rnd [4]byte
	rand.Read(rnd[:])
	pin := "/sys/fs/bpf/hbfdemo" + hex.EncodeToString(rnd[:])
	state, err := os.MkdirTemp("", "hbf-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	say("starting hbf on the host's eth0 (threshold: more than %d ports in 60s)", o.MaxPorts)
	d, err := startDaemon(o, host, "daemon", "--iface", netlab.Iface, "--pin-path", pin, "--state-dir", state, "--socket", state+"/hbf.sock", "--detach-on-exit",
		"--max-ports", strconv.Itoa(o.MaxPorts))
	if err != nil {
		return err
	}
	defer d.stop()

	say("the client fetches http://%s/ twice", host.Addr4)
	for range 2 {
		if _, err := fetch(ctx, client, host.Addr4); err != nil {
			return fmt.Errorf("client fetch: %w", err)
		}
	}
	time.Sleep(200 * time.Millisecond)

	say("the scanner scans %d ports of the host (%s)", len(scanPorts), o.Scanner)
	results, err := scan(ctx, o.Scanner, scanner, host.Addr4)
	if err != nil {
		return err
	}
	var learnt []string
	for _, port := range scanPorts {
		if s := results[port]; s == "open" || s == "closed" {
			learnt = append(learnt, fmt.Sprintf("%d (%s)", port, s))
		}
	}
	fmt.Fprintf(o.Stdout, "    the scanner learned the state of %d of %d ports: %s; the rest timed out\n",
		len(learnt), len(scanPorts), strings.Join(learnt, ", "))
	time.Sleep(200 * time.Millisecond)

	say("after the scan")
	_, err = fetch(ctx, client, host.Addr4)
	fmt.Fprintf(o.Stdout, "    client fetches http://%s/: %s\n", host.Addr4, outcome(err))
	_, err = fetch(ctx, scanner, host.Addr4)
	fmt.Fprintf(o.Stdout, "    scanner fetches http://%s/: %s\n", host.Addr4, outcome(err))

	m, err := scrape(ctx, host)
	if err != nil {
		return err
	}
	say("summary (from hbf's /metrics)")
	for _, row := range [][2]string{
		{"new connections reported", "hbf_new_connections_total"},
		{"port scans detected", "hbf_port_scans_detected_total"},
		{"sources blocked", "hbf_blocked_sources"},
		{"packets seen", "hbf_packets_total"},
		{"dropped: blocked source", `hbf_packets_dropped_total{reason="blocked"}`},
		{"dropped: threshold crossed", `hbf_packets_dropped_total{reason="scan"}`},
		{"events lost", "hbf_events_lost_total"},
	} {
		fmt.Fprintf(o.Stdout, "    %-28s %s\n", row[0], m[row[1]])
	}
	fmt.Fprintf(o.Stdout, "    %-28s %d (hbf lets through at most %d)\n", "ports the scanner learned", len(learnt), o.MaxPorts)
	return ctx.Err()
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout") {
		return "timed out (blocked)"
	}
	return err.Error()
}

func fetch(ctx context.Context, ns *netlab.NS, host netip.Addr) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/", host), nil)
	resp, err := ns.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

var nmapPort = regexp.MustCompile(`^(\d+)/tcp\s+(\S+)`)

// scan returns each port's state as the scanner saw it.
func scan(ctx context.Context, kind string, ns *netlab.NS, target netip.Addr) (map[int]string, error) {
	out := map[int]string{}
	if kind == "nmap" {
		ports := make([]string, len(scanPorts))
		for i, p := range scanPorts {
			ports[i] = strconv.Itoa(p)
		}
		res, err := ns.Run(ctx, "nmap", "-n", "-Pn", "-sS", "-T4", "--max-retries", "1", "-p", strings.Join(ports, ","), target.String())
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(res, "\n") {
			if m := nmapPort.FindStringSubmatch(l); m != nil {
				port, _ := strconv.Atoi(m[1])
				out[port] = m[2]
			}
		}
		return out, nil
	}
	// A connect scan, ten ports at a time.
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	for _, port := range scanPorts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			state := ns.Probe(ctx, netip.AddrPortFrom(target, uint16(port)), 1500*time.Millisecond)
			mu.Lock()
			out[port] = state
			mu.Unlock()
		})
	}
	wg.Wait()
	return out, ctx.Err()
}

// scrape reads hbf's metrics as "name{labels}" -> value.
func scrape(ctx context.Context, host *netlab.NS) (map[string]string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:9717/metrics", nil)
	resp, err := host.HTTPClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape hbf's metrics: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			out[f[0]] = f[1]
		}
	}
	return out, sc.Err()
}

type daemonProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startDaemon runs hbf in the host namespace, its event lines indented on
// the demo's output, and waits until it protects the interface.
func startDaemon(o Options, host *netlab.NS, args ...string) (*daemonProc, error) {
	cmd := host.Command(context.Background(), o.Exe, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &daemonProc{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	var diag []string
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			diag = append(diag, sc.Text())
			mu.Unlock()
			if strings.Contains(sc.Text(), "hbf is running") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(o.Stdout, "    hbf | "+sc.Text())
		}
		cmd.Wait()
		close(d.done)
	}()
	select {
	case <-ready:
		return d, nil
	case <-d.done:
	case <-time.After(20 * time.Second):
		d.stop()
	}
	mu.Lock()
	defer mu.Unlock()
	return nil, fmt.Errorf("hbf did not start:\n%s", strings.Join(diag, "\n"))
}

func (d *daemonProc) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}
