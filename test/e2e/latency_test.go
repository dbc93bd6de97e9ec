package e2e

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
)

// fixedPollCommit is the last hbf whose reader polled every 20 ms and was
// never woken by a connection event: BenchmarkEventLatency's baseline.
const fixedPollCommit = "67982a4"

// BenchmarkEventLatency times connections from the client's connect to
// their line on the daemon's stdout, for this hbf and for the build that
// polled every 20 ms, in interleaved rounds: at a light rate (a connection
// every 20 to 100 ms), and while a flood of new connections from another
// peer (hping3, 20,000 at about 5,000 a second) keeps the reader busy,
// when it also measures the daemon's CPU time per event.
func BenchmarkEventLatency(b *testing.B) {
	const (
		rounds = 5 // the CPU per event moves by ±10% from one to the next
		conns  = 40
	)
	old := buildCommit(b, fixedPollCommit)
	lab := newLab(b, netlab.Options{Peers: []string{"client", "flooder"}})
	serveHTTP(b, lab.Host, 8080)
	client, host := lab.Peers["client"], lab.Host.Addr4
	builds := []struct{ name, bin string }{{"adaptive", hbfBin}, {"fixed", old}}
	latency := map[string][]time.Duration{}
	cpu := map[string][]float64{}
	for range b.N {
		for range rounds {
			for _, build := range builds {
				d := waitReady(b, tryDaemonBin(b, lab, build.bin, "/sys/fs/bpf/"+randomName("hbftest"), b.TempDir()))
				lines := watchConnections(d, client.Addr4)
				light := timeConnections(b, client, hostPort(host, 8080), conns, 20*time.Millisecond, lines)
				latency[build.name+"-light"] = append(latency[build.name+"-light"], light...)

				before := processCPU(b, d)
				flood := hpingFlood(b, lab.Peers["flooder"], host.String(), 20_000, "u200")
				busy := timeConnections(b, client, hostPort(host, 8080), conns, 20*time.Millisecond, lines)
				sent, _ := flood()
				cpu[build.name] = append(cpu[build.name], float64((processCPU(b, d)-before).Microseconds())/float64(sent))
				latency[build.name+"-flood"] = append(latency[build.name+"-flood"], busy...)
				d.stop()
			}
		}
	}
	for _, k := range []string{"adaptive-light", "fixed-light", "adaptive-flood", "fixed-flood"} {
		b.ReportMetric(quantileMs(latency[k], 0.5), k+"-ms-p50")
		b.ReportMetric(quantileMs(latency[k], 0.99), k+"-ms-p99")
	}
	b.Logf("CPU µs per event in each round: adaptive %.1f, fixed %.1f", cpu["adaptive"], cpu["fixed"])
	b.ReportMetric(median(cpu["adaptive"]), "adaptive-us-cpu/event")
	b.ReportMetric(median(cpu["fixed"]), "fixed-us-cpu/event")
	b.ReportMetric(median(cpu["adaptive"])/median(cpu["fixed"]), "cpu-x-fixed")
}

// watchConnections returns the arrival of each of src's connection lines
// on d's stdout, by the connection's source port.
func watchConnections(d *daemonProc, src netip.Addr) <-chan portArrival {
	re := regexp.MustCompile(`New connection: ` + regexp.QuoteMeta(src.String()) + `:(\d+) -> `)
	ch := make(chan portArrival, 1024)
	d.mu.Lock()
	d.onLine = func(line string, at time.Time) {
		if m := re.FindStringSubmatch(line); m != nil {
			port, _ := strconv.Atoi(m[1])
			select {
			case ch <- portArrival{port, at}:
			default:
			}
		}
	}
	d.mu.Unlock()
	return ch
}

type portArrival struct {
	port int
	at   time.Time
}

// timeConnections connects n times from ns to addr, a random gap of one
// to five times minGap apart, and returns how long each took from the
// connect to its line.
func timeConnections(b *testing.B, ns *netlab.NS, addr netip.AddrPort, n int, minGap time.Duration, lines <-chan portArrival) []time.Duration {
	b.Helper()
	var out []time.Duration
	for range n {
		time.Sleep(minGap + rand.N(4*minGap))
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := ns.DialContext(ctx, "tcp", addr.String())
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		port := c.LocalAddr().(*net.TCPAddr).Port
		c.Close()
		deadline := time.After(5 * time.Second)
	wait:
		for {
			select {
			case a := <-lines:
				if a.port == port {
					out = append(out, a.at.Sub(start))
					break wait
				}
			case <-deadline:
				b.Fatalf("no line for the connection from port %d within 5 s", port)
			}
		}
	}
	return out
}

// processCPU is the CPU time d's threads have used, to the nanosecond
// (/proc/PID/task/*/schedstat), where /proc/PID/stat counts 10 ms ticks.
func processCPU(b *testing.B, d *daemonProc) time.Duration {
	b.Helper()
	return pidCPU(b, d.cmd.Process.Pid)
}

// pidCPU is the CPU time process pid's threads have used.
func pidCPU(b testing.TB, pid int) time.Duration {
	b.Helper()
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "schedstat"))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("the threads of pid %d: %v", pid, err)
	}
	var total time.Duration
	for _, task := range tasks {
		raw, err := os.ReadFile(task)
		if err != nil {
			continue // the thread ended
		}
		ns, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		total += time.Duration(ns)
	}
	return total
}
