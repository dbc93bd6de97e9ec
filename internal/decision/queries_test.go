package decision

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/hostnet"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/protect"
)

func TestWhyNamesEveryBlockAndAllowOfAnAddress(t *testing.T) {
	h := newHarness(t)
	h.setLists(h.list(h.writeList("list.txt", "198.51.100.0/24\n")))
	h.mustBlock("198.51.100.7", time.Hour)
	h.k.Drop(pfx("198.51.100.7/32"), 5)
	why := h.s.Why(netip.MustParseAddr("198.51.100.7"))
	if why.Verdict != "blocked" || len(why.Blocks) != 2 {
		t.Fatalf("why %+v", why)
	}
	// Most specific first, with what the kernel counted.
	if b := why.Blocks[0]; b.Prefix != pfx("198.51.100.7/32") || b.Origin != "manual" || b.Packets != 5 {
		t.Errorf("first block %+v", b)
	}
	if b := why.Blocks[1]; b.Prefix != pfx("198.51.100.0/24") || b.Origin != "file" || b.Source == "" {
		t.Errorf("second block %+v", b)
	}
	h.allow("198.51.100.7", 0)
	if why := h.s.Why(netip.MustParseAddr("198.51.100.7")); why.Verdict != "allowed-despite-block" {
		t.Errorf("allowed and listed: %s", why.Verdict)
	}
	if why := h.s.Why(netip.MustParseAddr("192.0.2.1")); why.Verdict != "allowed" || why.Allows[0].Origin != "host" {
		t.Errorf("the host's address: %+v", why)
	}
	if why := h.s.Why(netip.MustParseAddr("203.0.113.9")); why.Verdict != "not-blocked" {
		t.Errorf("a stranger: %s", why.Verdict)
	}
}

func TestBlocksListsRecordsThenListEntries(t *testing.T) {
	h := newHarness(t)
	h.setLists(h.list(h.writeList("list.txt", "203.0.113.0/24\n")))
	h.mustBlock("198.51.100.9", time.Hour)
	h.scan("198.51.100.8/32")
	h.clock.Add(2 * time.Hour) // the manual block expired; the scan's too
	h.mustBlock("198.51.100.7", 0)
	var got []string
	err := h.s.Blocks(context.Background(), func(b api.Block) error {
		got = append(got, b.Prefix.String()+" "+b.Origin)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"198.51.100.7/32 manual", "203.0.113.0/24 file"}; !slices.Equal(got, want) {
		t.Errorf("blocks %v, want %v", got, want)
	}
}

func TestCountsByOrigin(t *testing.T) {
	h := newHarness(t)
	h.setLists(h.list(h.writeList("list.txt", "203.0.113.0/24\n203.0.113.7\n")))
	h.mustBlock("198.51.100.9", 0)
	h.scan("198.51.100.8/32")
	h.allow("198.51.100.0/28", 0)
	got := h.s.Counts()
	fixed := protect.NewSet(testBase).Len()
	want := map[string]int{"blocks_file": 2, "blocks_manual": 1, "blocks_scan": 1, "allows": fixed + 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

// The never-block list follows the host: an address it gains is protected
// in the kernel, one it loses is not any more.
func TestNeverBlockFollowsTheHost(t *testing.T) {
	h := newHarness(t)
	moved := hostnet.Snapshot{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")}}
	if err := h.s.SetPolicy(policy.DefaultRules, protect.Host(moved, "/etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	allows := h.k.AllowPrefixes()
	if !slices.Contains(allows, pfx("192.0.2.2/32")) || slices.Contains(allows, pfx("192.0.2.1/32")) {
		t.Errorf("the kernel's allowlist %v: want 192.0.2.2 in and 192.0.2.1 out", allows)
	}
	wantError(t, h.block("192.0.2.2", 0), "an address of this host")
	h.mustBlock("192.0.2.1", 0)
}

func TestSSHClientIsNeverBlocked(t *testing.T) {
	h := newHarness(t)
	base := slices.Concat(testBase, protect.SSHClient("198.51.100.22 50022 192.0.2.1 22"))
	if err := h.s.SetPolicy(policy.DefaultRules, base); err != nil {
		t.Fatal(err)
	}
	wantError(t, h.block("198.51.100.0/24", 0), "the SSH client hbf was started from")
	if !slices.Contains(h.k.AllowPrefixes(), pfx("198.51.100.22/32")) {
		t.Errorf("the SSH client is not on the kernel's allowlist: %v", h.k.AllowPrefixes())
	}
}
