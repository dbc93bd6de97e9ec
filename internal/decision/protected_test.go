package decision

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/protect"
)

// When what is protected outgrows the kernel's allowlist, the host's own,
// its gateways, resolvers and etcd win the room, the members lose it: they
// are counted, listed as unenforced, and still refused as blocks. An hbf
// allow that would not fit is refused, not dropped.
func TestAllowlistRoomGoesToTheFirstKinds(t *testing.T) {
	h := newHarness(t)
	h.k.WithAllowCapacity(8)
	members := map[string][]netip.Addr{}
	for i := range 6 {
		members["m"+string(rune('a'+i))] = []netip.Addr{netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})}
	}
	memberEntries, _ := protect.Members(members, nil)
	base := slices.Concat(testBase, protect.Etcd([]netip.Addr{netip.MustParseAddr("203.0.113.50")}), memberEntries)
	if err := h.s.SetPolicy(policy.DefaultRules, base); err != nil {
		t.Fatal(err)
	}
	// loopback (2), the host (2) and etcd take five; three members fit.
	allows := h.k.AllowPrefixes()
	if len(allows) != 8 || !slices.Contains(allows, pfx("203.0.113.50/32")) || !slices.Contains(allows, pfx("192.0.2.1/32")) {
		t.Errorf("the kernel's allowlist %v: want the host's own and etcd first", allows)
	}
	entries, unenforced := h.s.Protected()
	if entries[protect.KindMember] != 6 || unenforced[protect.KindMember] != 3 || len(unenforced) != 1 {
		t.Errorf("protected %v, unenforced %v: want 3 of 6 members left out", entries, unenforced)
	}
	left := 0
	for _, a := range h.s.Allows() {
		if a.Unenforced {
			left++
			if a.Origin != "member" {
				t.Errorf("%+v left out of the kernel before a member", a)
			}
		}
	}
	if left != 3 {
		t.Errorf("%d entries listed as unenforced, want 3", left)
	}
	wantError(t, h.block("198.51.100.15", 0), "a member of the fleet: never blocked")
	if !strings.Contains(h.log.String(), "the kernel's allowlist is full") {
		t.Errorf("the overflow is not logged:\n%s", h.log)
	}

	// An allow outranks the members: one more goes out of the kernel.
	if r := h.allow("192.0.2.77", time.Hour); !r.OK {
		t.Fatalf("allow: %+v", r)
	}
	if _, unenforced := h.s.Protected(); unenforced[protect.KindMember] != 4 {
		t.Errorf("unenforced %v after an allow: want a fourth member out", unenforced)
	}
	// Allows that fill the room themselves: the one past it is refused.
	for i := range 2 {
		if r := h.allow(netip.AddrFrom4([4]byte{192, 0, 2, byte(80 + i)}).String(), 0); !r.OK {
			t.Fatalf("allow: %+v", r)
		}
	}
	wantError(t, h.allow("192.0.2.90", 0), "the kernel's allowlist is full (8 entries")
	if slices.Contains(h.k.AllowPrefixes(), pfx("192.0.2.90/32")) {
		t.Error("the refused allow is in the kernel")
	}
	if stored, _ := h.st.Allows(); len(stored) != 3 {
		t.Errorf("the store holds %d allows, want the 3 that fit", len(stored))
	}
}
