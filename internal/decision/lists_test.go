package decision

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/sources"
)

func TestListEntriesAddedAreBlocked(t *testing.T) {
	h := newHarness(t)
	path := h.writeList("list.txt", "198.51.100.7\n203.0.113.0/24\n")
	h.setLists(h.list(path))
	for _, p := range []string{"198.51.100.7/32", "203.0.113.0/24"} {
		if k, ok := h.kernel(p); !ok || !k.Expires.IsZero() {
			t.Errorf("%s: %+v %v, want a permanent kernel entry", p, k, ok)
		}
	}
	if blocks, _ := h.st.Blocks(); len(blocks) != 0 {
		t.Errorf("list entries became records: %+v", blocks)
	}
}

func TestListEntriesRemovedAreUnblocked(t *testing.T) {
	h := newHarness(t)
	path := h.writeList("list.txt", "198.51.100.7\n198.51.100.8\n")
	h.setLists(h.list(path))
	h.writeList("list.txt", "198.51.100.8\n")
	added, removed, err := h.s.ReplaceLists([]*sources.Source{h.list(path)})
	if err != nil || added != 0 || removed != 1 {
		t.Errorf("replace: added %d, removed %d, %v", added, removed, err)
	}
	if _, ok := h.kernel("198.51.100.7/32"); ok {
		t.Error("the removed entry is still blocked")
	}
	if _, ok := h.kernel("198.51.100.8/32"); !ok {
		t.Error("the entry that stayed is gone")
	}
}

func TestLineHeldByTwoListsStaysUntilBothDropIt(t *testing.T) {
	h := newHarness(t)
	a := h.writeList("a.txt", "198.51.100.7\n")
	b := h.writeList("b.txt", "198.51.100.7\n198.51.100.8\n")
	h.setLists(h.list(a), h.list(b))
	h.writeList("a.txt", "")
	h.setLists(h.list(a), h.list(b))
	if _, ok := h.kernel("198.51.100.7/32"); !ok {
		t.Error("dropped while another list still holds it")
	}
	h.writeList("b.txt", "198.51.100.8\n")
	h.setLists(h.list(a), h.list(b))
	if _, ok := h.kernel("198.51.100.7/32"); ok {
		t.Error("still blocked after both lists dropped it")
	}
}

func TestListLineAlsoBlockedByHandKeepsTheManualBlock(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("198.51.100.7", 2*time.Hour)
	path := h.writeList("list.txt", "198.51.100.7\n")
	h.setLists(h.list(path))
	if k, _ := h.kernel("198.51.100.7/32"); !k.Expires.IsZero() {
		t.Errorf("listed and blocked by hand: the kernel's entry expires %v, want never (the list's)", k.Expires)
	}
	h.writeList("list.txt", "")
	h.setLists(h.list(path))
	k, ok := h.kernel("198.51.100.7/32")
	if !ok {
		t.Fatal("the manual block went with the list's line")
	}
	sameExpiry(t, "the manual block", k.Expires, h.clock.Now().Add(2*time.Hour))
}

func TestListedEntriesOutliveUnblock(t *testing.T) {
	h := newHarness(t)
	h.setLists(h.list(h.writeList("list.txt", "198.51.100.7\n")))
	r := h.unblock("198.51.100.7")
	if r.OK || !strings.Contains(r.Error, "is listed in") {
		t.Errorf("unblock of a listed address: %+v", r)
	}
	// A manual block on top: unblocking it leaves the list's, permanent.
	h.s.Block(root, []string{"198.51.100.7"}, time.Hour, "", false)
	r = h.unblock("198.51.100.7")
	if r.OK || !strings.Contains(r.Error, "stays blocked until removed there") {
		t.Errorf("unblock of a listed and manual address: %+v", r)
	}
	if k, ok := h.kernel("198.51.100.7/32"); !ok || !k.Expires.IsZero() {
		t.Errorf("kernel entry after the unblock: %v %v, want the list's permanent one", k.Expires, ok)
	}
}

// A list that does not fit in the kernel's map changes nothing: the lists
// stay as they were, and a manual block the attempt replaced is written
// back.
func TestListThatDoesNotFitChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.k.WithCapacity(10)
	h.mustBlock("10.0.0.0", time.Hour) // the first entry of the big list
	h.setLists(h.list(h.writeList("small.txt", "203.0.113.1\n")))
	var big strings.Builder
	for i := range 20 {
		big.WriteString(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).String() + "\n")
	}
	bigList := h.list(h.writeList("big.txt", big.String()))
	_, _, err := h.s.ReplaceLists(append(h.s.Lists(), bigList))
	if err == nil || !strings.Contains(err.Error(), "the blocklists hold 21 IPv4 addresses") || !strings.Contains(err.Error(), "raise the capacity to") {
		t.Fatalf("a list too big for the map: %v", err)
	}
	if n := len(h.s.Lists()); n != 1 {
		t.Errorf("%d lists in force, want the one before", n)
	}
	if _, ok := h.kernel("10.0.0.1/32"); ok {
		t.Error("part of the refused list was blocked")
	}
	k, ok := h.kernel("10.0.0.0/32")
	if !ok {
		t.Fatal("the manual block the refused list also held is gone from the kernel")
	}
	sameExpiry(t, "the manual block", k.Expires, h.clock.Now().Add(time.Hour))
	if _, ok := h.kernel("203.0.113.1/32"); !ok {
		t.Error("the list in force lost its entry")
	}
}

// Each family's addresses have a map of their own: lists fit when each
// family fits, and a refusal names the family that does not.
func TestListsFitEachFamily(t *testing.T) {
	h := newHarness(t)
	addrs := func(n int, v6 bool) string {
		var b strings.Builder
		for i := range n {
			a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
			if v6 {
				a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
			}
			b.WriteString(a.String() + "\n")
		}
		return b.String()
	}
	c := dataplane.Capacity{Blocks: 1024, BlockPrefixes: 1024} // room for lists: 960 a family
	both := h.list(h.writeList("both.txt", addrs(900, false)+addrs(900, true)))
	if err := ListsFit([]*sources.Source{both}, c); err != nil {
		t.Errorf("900 addresses of each family: %v", err)
	}
	v6 := h.list(h.writeList("v6.txt", addrs(1000, true)))
	err := ListsFit([]*sources.Source{v6}, c)
	if err == nil || !strings.Contains(err.Error(), "the blocklists hold 1000 IPv6 addresses, more than the 960") {
		t.Errorf("1000 IPv6 addresses: %v", err)
	}
}

func TestCapacityFor(t *testing.T) {
	for _, n := range []int{1, 15, 16, 960, 1000, 1 << 20} {
		c := capacityFor(n)
		if room := (dataplane.Capacity{Blocks: c}).ForLists().Blocks; room < n {
			t.Errorf("capacityFor(%d) = %d leaves room for %d", n, c, room)
		}
		if room := (dataplane.Capacity{Blocks: c - 1}).ForLists().Blocks; room >= n {
			t.Errorf("capacityFor(%d) = %d, yet %d would do", n, c, c-1)
		}
	}
}
