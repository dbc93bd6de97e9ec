package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// The last commits whose hbf pins each earlier layout; the upgrade test
// runs them. v1: scan_states of 2^16 entries; v2: ports without their
// protocol; v3: no block filter; v4: no allowlist bits in it; v5: no
// IPv6 /64 bits in them; v6: one exact-block map for both families; v7:
// no connection limits.
var earlierLayoutCommits = map[string]string{
	"v1": "b8d8cd1", "v2": "44254c6", "v3": "6a0c199", "v4": "0db7857", "v5": "cb72e48", "v6": "0884948",
	"v7": "1adaf5f",
}

// currentLayout is the layout folder this hbf pins in, and pinnedMapCount
// the maps it pins there: blocks4, blocks6, block_prefixes,
// allow_prefixes, scan_states, counters, block_filter, limits,
// limit_counters, conn_logs, datagram_logs.
const (
	currentLayout  = "v8"
	pinnedMapCount = 11
)

// buildCommit builds cmd/hbf as it was at commit, from this repository's
// history, and returns the binary.
func buildCommit(t testing.TB, commit string) string {
	t.Helper()
	testenv.RequireCommand(t, "git")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	top, err := exec.CommandContext(ctx, "git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("the upgrade test needs hbf's git history: %v", err)
	}
	src := t.TempDir()
	archive := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh",
		strings.TrimSpace(string(top)), commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract commit %s (a shallow clone lacks it: fetch the history): %v: %s", commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), "hbf-"+commit)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/hbf")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hbf at %s: %v: %s", commit, err, out)
	}
	return bin
}

// An hbf of an earlier layout is replaced by this one while a blocked
// source streams and a client connects: the new daemon copies the state
// into its maps (converting what changed), swaps its program into the
// pinned link, and removes the old pins. Not one packet of the blocked
// source is answered, no client connection fails, the old blocks are in
// force and listed, and a scanner half-way through its ports when the old
// hbf stopped is blocked at its next one.
func TestUpgradeUnderLoad(t *testing.T) {
	for _, layout := range []string{"v1", "v2", "v3", "v4", "v5", "v6", "v7"} {
		t.Run("from "+layout, func(t *testing.T) {
			t.Parallel()
			testUpgradeUnderLoad(t, layout)
		})
	}
}

// blockedV6 is an IPv6 address the upgrade test blocks.
const blockedV6 = "2001:db8:ffff::9"

func testUpgradeUnderLoad(t *testing.T, layout string) {
	testenv.RequireCommand(t, "hping3")
	old := buildCommit(t, earlierLayoutCommits[layout])
	lab := newLab(t, netlab.Options{Peers: []string{"client", "flooder", "scanner", "halfway"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082, 8083)
	host := lab.Host.Addr4
	flooder, scanner, client, halfway := lab.Peers["flooder"], lab.Peers["scanner"], lab.Peers["client"], lab.Peers["halfway"]
	pinPath, stateDir := "/sys/fs/bpf/"+randomName("hbftest"), t.TempDir()

	a := waitReady(t, tryDaemonBin(t, lab, old, pinPath, stateDir, "--detach-on-exit=false"))
	a.mustCLI("block", flooder.Addr4.String(), "--reason", "flood")
	a.mustCLI("block", blockedV6, "--reason", "an IPv6 address") // to the IPv6 map of its own
	for port := 8080; port <= 8083; port++ {
		dialOutcome(scanner, hostPort(host, port), time.Second)
	}
	a.waitLine(line(`Blocked %s for 1h0m0s: port scan`, scanner.Addr4))
	for port := 8080; port <= 8082; port++ { // N ports: one short of a scan
		if got := dialOutcome(halfway, hostPort(host, port), time.Second); got != "open" {
			t.Fatalf("the half-way scanner's port %d: %s", port, got)
		}
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pinPath, layout, "links", netlab.Iface)); err != nil {
		t.Fatalf("the %s hbf left no pinned link: %v", layout, err)
	}

	// The client connects every 20 ms through the whole upgrade.
	stop := clientLoop(client, host, 8080)
	flood := hpingFlood(t, flooder, host.String(), 100_000, "u20")
	time.Sleep(300 * time.Millisecond)
	b := waitReady(t, tryDaemonAt(t, lab, pinPath, stateDir, "--detach-on-exit=false"))
	time.Sleep(300 * time.Millisecond)
	sent, received := flood()
	attempts, failures := stop()

	if received != 0 {
		t.Errorf("the blocked flooder sent %d SYNs and got %d answers across the upgrade", sent, received)
	}
	if failures != 0 {
		t.Errorf("%d of %d client connections failed across the upgrade", failures, attempts)
	}
	t.Logf("upgrade from %s under a flood of %d SYNs from a blocked source: %d answered; %d client connections, %d failed",
		layout, sent, received, attempts, failures)
	if !strings.Contains(b.stderrText(), "migrated from an earlier layout") {
		t.Errorf("no migration logged:\n%s", b.stderrText())
	}
	blocks := b.listJSON()
	if findBlock(blocks, flooder.Addr4.String()+"/32", "manual") == nil || findBlock(blocks, scanner.Addr4.String()+"/32", "scan") == nil {
		t.Errorf("after the upgrade hbf lists %+v, want the manual and the scan block", blocks)
	}
	if findBlock(blocks, blockedV6+"/128", "manual") == nil {
		t.Errorf("after the upgrade hbf lists %+v, want the IPv6 block", blocks)
	}
	if got := dialOutcome(scanner, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("the scanner blocked before the upgrade connects: %s", got)
	}
	// The tracker came across: the half-way scanner's next port is its
	// (N+1)-th.
	if got := dialOutcome(halfway, hostPort(host, 8083), time.Second); got != "filtered" {
		t.Errorf("the half-way scanner's (N+1)-th port after the upgrade: %s, want filtered", got)
	}
	b.waitLine(line(`Port scan detected: %s -> %s on ports 8080,8081,8082,8083`, halfway.Addr4, host))
	if n := xdpPrograms(t, lab.Host); n != 1 {
		t.Errorf("%d XDP programs on the interface, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(pinPath, layout)); !os.IsNotExist(err) {
		t.Errorf("the %s pins are still there: %v", layout, err)
	}
	if _, err := os.Stat(filepath.Join(pinPath, currentLayout, "links", netlab.Iface)); err != nil {
		t.Errorf("the link is not pinned in %s: %v", currentLayout, err)
	}
}
