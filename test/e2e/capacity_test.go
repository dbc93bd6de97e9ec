package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/netlab"
)

// writeAddrs writes a blocklist of n addresses of 10.0.0.0/8 and returns
// its path.
func writeAddrs(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		b.WriteString(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String() + "\n")
	}
	path := filepath.Join(t.TempDir(), "list.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A list that does not fit in the block map is refused before anything is
// attached, in one line that says what to raise; with the capacity raised
// it loads, and a capacity changed across a restart keeps every block.
func TestListCapacity(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client"}})
	list := writeAddrs(t, 1000)
	pinPath, stateDir := "/sys/fs/bpf/"+randomName("hbftest"), t.TempDir()

	refused := tryDaemonAt(t, lab, pinPath, stateDir, "--blocklist", list, "--max-blocks", "1024")
	if err := refused.wait(20 * time.Second); err == nil {
		t.Fatal("a list larger than the block map's room was accepted")
	}
	want := "the blocklists hold 1000 IPv4 addresses, more than the 960 the kernel keeps for lists " +
		"(--max-blocks 1024, less room for scan, manual and fleet blocks): raise --max-blocks to 1066 or more"
	if !strings.Contains(refused.stderrText(), want) {
		t.Errorf("the refusal does not say %q:\n%s", want, refused.stderrText())
	}
	noXDP(t, lab.Host)

	d := waitReady(t, tryDaemonAt(t, lab, pinPath, stateDir, "--blocklist", list, "--max-blocks", "1066", "--detach-on-exit=false"))
	d.mustCLI("block", lab.Peers["client"].Addr4.String(), "--reason", "manual")
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	e := waitReady(t, tryDaemonAt(t, lab, pinPath, stateDir, "--blocklist", list, "--max-blocks", "4096"))
	if !strings.Contains(e.stderrText(), "resizing the block maps") {
		t.Errorf("no resize logged:\n%s", e.stderrText())
	}
	st := e.status()
	if st.Settings["max_blocks"] != "4096" || st.Entries["blocks_file"] != 1000 || st.Entries["blocks_manual"] != 1 {
		t.Errorf("after the resize: settings %v, entries %v", st.Settings, st.Entries)
	}
	if got := dialOutcome(lab.Peers["client"], hostPort(lab.Host.Addr4, 22), 2*time.Second); got != "filtered" {
		t.Errorf("the manual block after the resize: %s, want filtered", got)
	}
}
