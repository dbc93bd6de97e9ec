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

// layoutV1Commit is the last commit whose hbf pins layout v1 (scan_states of
// 2^16 entries); the upgrade test runs it.
const layoutV1Commit = "b8d8cd1"

// buildCommit builds cmd/hbf as it was at commit, from this repository's
// history, and returns the binary.
func buildCommit(t *testing.T, commit string) string {
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

// An hbf of the earlier layout (v1) is replaced by this one while a blocked
// source streams and a client connects: the new daemon copies the state
// into its maps, swaps its program into the pinned link, and removes the old
// pins. Not one packet of the blocked source is answered, no client
// connection fails, and the old blocks are in force and listed.
func TestUpgradeFromLayoutV1UnderLoad(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "hping3")
	old := buildCommit(t, layoutV1Commit)
	lab := newLab(t, netlab.Options{Peers: []string{"client", "flooder", "scanner"}})
	serveHTTP(t, lab.Host, 8080, 8081, 8082, 8083)
	host := lab.Host.Addr4
	flooder, scanner, client := lab.Peers["flooder"], lab.Peers["scanner"], lab.Peers["client"]
	pinPath, stateDir := "/sys/fs/bpf/"+randomName("hbftest"), t.TempDir()

	a := waitReady(t, tryDaemonBin(t, lab, old, pinPath, stateDir, "--detach-on-exit=false"))
	a.mustCLI("block", flooder.Addr4.String(), "--reason", "flood")
	for port := 8080; port <= 8083; port++ {
		dialOutcome(scanner, hostPort(host, port), time.Second)
	}
	a.waitLine(line(`Blocked %s for 1h0m0s: port scan`, scanner.Addr4))
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pinPath, "v1", "links", netlab.Iface)); err != nil {
		t.Fatalf("the v1 hbf left no pinned link: %v", err)
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
	t.Logf("upgrade under a flood of %d SYNs from a blocked source: %d answered; %d client connections, %d failed",
		sent, received, attempts, failures)
	if !strings.Contains(b.stderrText(), "migrated from an earlier layout") {
		t.Errorf("no migration logged:\n%s", b.stderrText())
	}
	blocks := b.listJSON()
	if findBlock(blocks, flooder.Addr4.String()+"/32", "manual") == nil || findBlock(blocks, scanner.Addr4.String()+"/32", "scan") == nil {
		t.Errorf("after the upgrade hbf lists %+v, want the manual and the scan block", blocks)
	}
	if got := dialOutcome(scanner, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("the scanner blocked before the upgrade connects: %s", got)
	}
	if n := xdpPrograms(t, lab.Host); n != 1 {
		t.Errorf("%d XDP programs on the interface, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(pinPath, "v1")); !os.IsNotExist(err) {
		t.Errorf("the v1 pins are still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(pinPath, "v2", "links", netlab.Iface)); err != nil {
		t.Errorf("the link is not pinned in v2: %v", err)
	}
}
