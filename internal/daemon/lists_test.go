package daemon

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/decision"
	"github.com/hbf-firewall/hbf/internal/sources"
)

// An edit that does not parse keeps the version in force, says so in the
// list's status, and the next good edit applies.
func TestBadListEditKeepsTheVersionInForce(t *testing.T) {
	h := newHarness(t)
	path := h.writeList("list.txt", "198.51.100.7\n")
	h.watchList(path)

	h.writeList("list.txt", "198.51.100.7\n198.51.100.300\n203.0.113.9\n")
	touch(t, path)
	h.d.watchLists()
	h.d.wg.Wait() // its copy of the list
	if _, ok := h.kernel("203.0.113.9/32"); ok {
		t.Error("an entry of the bad edit was blocked")
	}
	if _, ok := h.kernel("198.51.100.7/32"); !ok {
		t.Error("the version in force was dropped")
	}
	l := h.s.Lists()[0]
	if !strings.Contains(l.Degraded, `line 2: "198.51.100.300" is not an IP or CIDR`) || !strings.Contains(l.Degraded, "stays in force") {
		t.Errorf("list status %q", l.Degraded)
	}

	h.writeList("list.txt", "203.0.113.9\n")
	touch(t, path)
	h.d.watchLists()
	h.d.wg.Wait()
	if _, ok := h.kernel("203.0.113.9/32"); !ok {
		t.Error("the good edit did not apply")
	}
	if _, ok := h.kernel("198.51.100.7/32"); ok {
		t.Error("the entry the good edit removed is still blocked")
	}
	if l := h.s.Lists()[0]; l.Degraded != "" {
		t.Errorf("still degraded after a good edit: %q", l.Degraded)
	}
}

// touch gives a file a new modification time: edits within a clock tick
// look the same to the watcher otherwise.
func touch(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	later := st.ModTime().Add(time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
}

func TestListEntriesPolicyRefusesAreSkipped(t *testing.T) {
	h := newHarness(t)
	path := h.writeList("list.txt", "192.0.2.1\n198.51.100.7\n0.0.0.0/0\n")
	src, _, err := h.d.loader(h.s.Checker(h.d.live.Rules, h.d.protectedBase(h.d.live, testHost))).Load(sources.Spec{Where: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.setLists(src)
	if _, ok := h.kernel("192.0.2.1/32"); ok {
		t.Error("the host's own address was blocked from a list")
	}
	if _, ok := h.kernel("198.51.100.7/32"); !ok {
		t.Error("a good entry was skipped")
	}
	if log := h.log.String(); !strings.Contains(log, "blocklist entries refused by policy, skipped") ||
		!strings.Contains(log, "an address of this host") {
		t.Errorf("the skipped entries are not named:\n%s", log)
	}
}

// A list that grows past the room the block map keeps for lists keeps the
// version in force, marked degraded with the count, the room and the
// setting to raise; scanners keep their sixteenth of the map.
func TestListGrowingPastTheMapKeepsTheVersionInForce(t *testing.T) {
	h := newHarness(t)
	h.k.WithCapacity(1024) // room for lists: 960
	path := h.writeList("list.txt", "198.51.100.7\n")
	h.watchList(path)

	var big strings.Builder
	for i := range 1000 {
		big.WriteString(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String() + "\n")
	}
	h.writeList("list.txt", big.String())
	touch(t, path)
	h.d.watchLists()
	h.d.wg.Wait()
	if _, ok := h.kernel("10.0.0.1/32"); ok {
		t.Error("an entry of the list too big was blocked")
	}
	if _, ok := h.kernel("198.51.100.7/32"); !ok {
		t.Error("the version in force was dropped")
	}
	want := "the blocklists hold 1000 IPv4 addresses, more than the 960 the kernel keeps for lists " +
		"(--max-blocks 1024, less room for scan, manual and fleet blocks): raise --max-blocks to 1066 or more"
	if l := h.s.Lists()[0]; !strings.Contains(l.Degraded, want) || !strings.Contains(l.Degraded, "stays in force") {
		t.Errorf("list status %q, want it to say %q", l.Degraded, want)
	}
	// Unchanged since: not read again.
	h.d.watchLists()
	if l := h.s.Lists()[0]; l.Degraded == "" {
		t.Error("the list was read again, unchanged, and its status lost")
	}
}

// watchList puts the list file at path in force, as the daemon's start
// does, for watchLists to follow.
func (h *harness) watchList(path string) {
	h.t.Helper()
	h.d.live.Blocklists = []string{path}
	src, _, err := h.d.loader(h.s.Checker(h.d.live.Rules, nil)).Load(sources.Spec{Where: path}, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	h.setLists(src)
}

// The engine says what to raise; the daemon names the flag.
func TestExplainNamesTheSetting(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.s.Block(root, []string{"10.0.0.0/7"}, 0, "", false)[0],
		"10.0.0.0/7 is wider than /8, the narrowest IPv4 block allowed (--min-prefix-v4)")
	wantError(t, h.s.Block(root, []string{"2001:db8::/31"}, 0, "", false)[0],
		"2001:db8::/31 is wider than /32, the narrowest IPv6 block allowed (--min-prefix-v6)")
	err := explain(&decision.ListsTooBigError{What: "prefixes", Prefixes: true, Need: 2000, Room: 960, Capacity: 1024, MinCapacity: 2134})
	if want := "(--max-block-prefixes 1024, less room for scan, manual and fleet blocks): raise --max-block-prefixes to 2134 or more"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("lists too big: %v, want it to say %q", err, want)
	}
	err = explain(&dataplane.CapacityError{Path: "/sys/fs/bpf/hbf/v7/maps/blocks4", Entries: 1500, Capacity: 1024})
	if want := "blocks4 holds 1500 entries, more than --max-blocks 1024: raise --max-blocks to 1500 or more"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a capacity below the blocks pinned: %v, want it to say %q", err, want)
	}
}
