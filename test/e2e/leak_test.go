package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// TestFastScannersLearnAtMostN: however fast a TCP scan, it learns at most
// N closed ports, counted as the resets the host sent: nmap at 20,000
// probes a second, masscan at 100,000, and hping3 flooding with an
// incrementing port.
func TestFastScannersLearnAtMostN(t *testing.T) {
	for _, sc := range []struct {
		name string
		cmd  string
		args func(host string) []string
	}{
		{"nmap -T5 --min-rate 20000", "nmap", func(host string) []string {
			return []string{"-n", "-Pn", "-sS", "-T5", "--min-rate", "20000", "--max-retries", "1", "-p", "1-1000", host}
		}},
		{"masscan --rate 100000", "masscan", func(host string) []string {
			return []string{"--adapter", netlab.Iface, "--router-ip", host, "-p1-1000", "--rate", "100000", "--wait", "1", host}
		}},
		{"hping3 --flood -p ++1", "hping3", func(host string) []string {
			return []string{"-S", "--flood", "-p", "++1", host}
		}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			testenv.RequireCommand(t, sc.cmd)
			lab := newLab(t, netlab.Options{Peers: []string{"scanner"}})
			d := startDaemon(t, lab)
			host, scanner := lab.Host.Addr4, lab.Peers["scanner"]
			before := snmp(t, lab.Host, "Tcp", "OutRsts")
			// hping3 --flood runs until stopped: two seconds of it.
			ctx, cancel := context.WithTimeout(context.Background(), map[bool]time.Duration{true: 2 * time.Second, false: 2 * time.Minute}[sc.cmd == "hping3"])
			defer cancel()
			out, err := scanner.Command(ctx, sc.cmd, sc.args(host.String())...).CombinedOutput()
			if err != nil && ctx.Err() == nil && sc.cmd != "hping3" {
				t.Fatalf("%s: %v\n%s", sc.name, err, out)
			}
			told := snmp(t, lab.Host, "Tcp", "OutRsts") - before
			t.Logf("%s: the host reset %d probes", sc.name, told)
			if told > maxPorts {
				t.Errorf("%s learnt %d closed ports, want at most %d", sc.name, told, maxPorts)
			}
			d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, scanner.Addr4))
		})
	}
}
