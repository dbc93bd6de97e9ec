package decision

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/report"
)

var errRefused = errors.New("refused by the test")

// refuse makes the kernel refuse op, of only on when given.
func (h *harness) refuse(op string, only ...string) {
	h.k.Refuse(func(o string, p netip.Prefix) error {
		if o == op && (len(only) == 0 || p == pfx(only[0])) {
			return errRefused
		}
		return nil
	})
}

func TestBlockTheKernelRefusesIsUndone(t *testing.T) {
	h := newHarness(t)
	h.refuse("Block")
	r := h.block("203.0.113.7", time.Hour)
	wantError(t, r, "kernel: block 203.0.113.7/32: refused by the test")
	if recs := h.stored("203.0.113.7/32"); len(recs) != 0 {
		t.Errorf("the store claims a block the kernel refused: %+v", recs)
	}
	if ev := published[*report.Block](h); len(ev) != 0 {
		t.Errorf("a refused block was reported: %+v", ev)
	}
	if h.s.UndoFailures() != 0 {
		t.Error("a successful undo counted as failed")
	}
}

func TestBlockTheKernelRefusesKeepsTheEarlierBlock(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", time.Hour)
	h.refuse("Block")
	wantError(t, h.block("203.0.113.7", 5*time.Hour), "kernel:")
	recs := h.stored("203.0.113.7/32")
	if len(recs) != 1 {
		t.Fatalf("store %+v", recs)
	}
	sameExpiry(t, "the manual block", recs[0].Expires, h.clock.Now().Add(time.Hour))
	k, _ := h.kernel("203.0.113.7/32")
	sameExpiry(t, "the kernel's entry", k.Expires, h.clock.Now().Add(time.Hour))
}

func TestUnblockTheKernelRefusesIsUndone(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", time.Hour)
	h.scan("203.0.113.7/32")
	h.refuse("Unblock")
	wantError(t, h.unblock("203.0.113.7"), "kernel: unblock 203.0.113.7/32: refused by the test")
	if recs := h.stored("203.0.113.7/32"); len(recs) != 2 {
		t.Errorf("the store lost records of a block still in force: %+v", recs)
	}
	if _, ok := h.kernel("203.0.113.7/32"); !ok {
		t.Error("the kernel's entry is gone")
	}
	h.k.Refuse(nil)
	if r := h.unblock("203.0.113.7"); !r.OK {
		t.Errorf("unblock once the kernel takes it: %+v", r)
	}
}

func TestAllowTheKernelRefusesIsUndone(t *testing.T) {
	h := newHarness(t)
	before := h.k.AllowPrefixes()
	h.refuse("Allow", "198.51.100.0/24")
	wantError(t, h.allow("198.51.100.0/24", 0), "kernel: allow 198.51.100.0/24: refused by the test")
	h.k.Refuse(nil)
	if h.s.UndoFailures() != 0 {
		t.Error("a successful undo counted as failed")
	}
	if allows, _ := h.st.Allows(); len(allows) != 0 {
		t.Errorf("the store claims an allow the kernel refused: %+v", allows)
	}
	if got := h.k.AllowPrefixes(); !slices.Equal(got, before) {
		t.Errorf("the kernel's allowlist %v, want %v as before", got, before)
	}
	h.mustBlock("198.51.100.7", 0)
}

func TestDisallowTheKernelRefusesIsUndone(t *testing.T) {
	h := newHarness(t)
	h.allow("198.51.100.0/24", 0)
	h.refuse("Disallow")
	wantError(t, h.disallow("198.51.100.0/24"), "kernel: disallow 198.51.100.0/24: refused by the test")
	h.k.Refuse(nil)
	if allows, _ := h.st.Allows(); len(allows) != 1 {
		t.Errorf("the store lost an allow still in force: %+v", allows)
	}
	wantError(t, h.block("198.51.100.7", 0), "on the allowlist")
}

// The store itself refuses: nothing reaches the kernel.
func TestChangeTheStoreRefusesLeavesTheKernelAlone(t *testing.T) {
	h := newHarness(t)
	h.st.Close()
	wantError(t, h.block("203.0.113.7", time.Hour), "store: ")
	if _, ok := h.kernel("203.0.113.7/32"); ok {
		t.Error("the kernel holds a block the store never took")
	}
	wantError(t, h.allow("198.51.100.0/24", 0), "store: ")
}

// The kernel refuses and the store cannot be put back: the daemon says so
// and counts it, and the next reconciliation brings the kernel in step.
func TestUndoThatFailsIsLoggedAndCounted(t *testing.T) {
	h := newHarness(t)
	h.k.Refuse(func(op string, _ netip.Prefix) error {
		if op == "Block" {
			h.st.Close() // the disk goes at the worst moment
			return errRefused
		}
		return nil
	})
	wantError(t, h.block("203.0.113.7", time.Hour), "kernel: ")
	if n := h.s.UndoFailures(); n != 1 {
		t.Errorf("undo failures %d, want 1", n)
	}
	log := h.log.String()
	if !strings.Contains(log, "a change the kernel refused could not be undone") || !strings.Contains(log, "block 203.0.113.7/32") {
		t.Errorf("the failed undo is not logged:\n%s", log)
	}
	// The cache kept what the store holds: the block, which the next
	// reconciliation writes once the kernel takes it.
	h.k.Refuse(nil)
	if st := h.reconcile(false); st.Written != 1 {
		t.Errorf("reconcile %+v, want the block written", st)
	}
	if _, ok := h.kernel("203.0.113.7/32"); !ok {
		t.Error("the reconciliation did not write the block")
	}
}
