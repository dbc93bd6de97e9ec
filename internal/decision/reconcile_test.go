package decision

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/kerneltest"
	"github.com/hbf-firewall/hbf/internal/store"
)

func TestScanBlockIsRecordedWithItsEvidence(t *testing.T) {
	h := newHarness(t)
	expires, reason := h.scan("198.51.100.66/32")
	if reason != "port scan" || !sameTime(expires, h.clock.Now().Add(time.Hour)) {
		t.Errorf("first offence: %v %q", expires, reason)
	}
	recs := h.stored("198.51.100.66/32")
	if len(recs) != 1 || recs[0].Origin != store.OriginScan || recs[0].By != "kernel" || len(recs[0].Ports) != 4 {
		t.Errorf("store: %+v", recs)
	}
}

func TestFirstOffenceKeepsTheKernelsDuration(t *testing.T) {
	h := newHarness(t)
	h.scan("198.51.100.66/32")
	k, _ := h.kernel("198.51.100.66/32")
	sameExpiry(t, "the first offence", k.Expires, h.clock.Now().Add(time.Hour))
}

// Each later offence gets the schedule's next step (24h, 7d, then for
// good), in the store and in the kernel.
func TestRepeatOffencesEscalate(t *testing.T) {
	h := newHarness(t)
	for i, want := range []time.Duration{time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 0, 0} {
		h.clock.Add(2 * time.Hour)
		expires, reason := h.scan("198.51.100.66/32")
		k, _ := h.kernel("198.51.100.66/32")
		if want == 0 {
			if !expires.IsZero() || !k.Expires.IsZero() {
				t.Errorf("offence %d: expires %v, kernel %v; want for good", i+1, expires, k.Expires)
			}
		} else {
			sameExpiry(t, "the block", expires, h.clock.Now().Add(want))
			sameExpiry(t, "the kernel's entry", k.Expires, h.clock.Now().Add(want))
		}
		if i > 0 && reason != fmt.Sprintf("port scan (offence %d)", i+1) {
			t.Errorf("offence %d: reason %q", i+1, reason)
		}
	}
}

func TestQuietSourcesStartAgainAtTheFirstOffence(t *testing.T) {
	h := newHarness(t)
	h.scan("198.51.100.66/32")
	h.clock.Add(2 * time.Hour)
	if _, reason := h.scan("198.51.100.66/32"); reason != "port scan (offence 2)" {
		t.Fatalf("second offence: %q", reason)
	}
	h.clock.Add(31 * 24 * time.Hour) // longer than --escalation-forget
	expires, reason := h.scan("198.51.100.66/32")
	if reason != "port scan" || !sameTime(expires, h.clock.Now().Add(time.Hour)) {
		t.Errorf("after 31 quiet days: %v %q, want a first offence", expires, reason)
	}
}

func TestSweepEndsExpiredDecisions(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", time.Hour)
	h.mustBlock("203.0.113.8", 0)
	h.allow("198.51.100.0/24", time.Hour)
	h.clock.Add(time.Hour + time.Second)
	if err := h.s.Sweep(time.Minute); err != nil {
		t.Fatal(err)
	}
	if len(h.stored("203.0.113.7/32")) != 0 || len(h.stored("203.0.113.8/32")) != 1 {
		t.Error("the sweep ended the wrong decisions")
	}
	if got := h.history("203.0.113.7/32"); !slices.Equal(got, []string{"block", "expire"}) {
		t.Errorf("history %v", got)
	}
	allows, _ := h.st.Allows()
	if len(allows) != 0 {
		t.Errorf("an expired allow stays: %+v", allows)
	}
	// The kernel ignored the expired entry already; reconciliation takes it out.
	if st := h.reconcile(false); st.Removed != 1 {
		t.Errorf("reconcile %+v, want the expired entry removed", st)
	}
	if _, ok := h.kernel("203.0.113.7/32"); ok {
		t.Error("the expired entry stays in the kernel")
	}
}

func TestReconcileAdoptsScanBlocksTheKernelMade(t *testing.T) {
	h := newHarness(t)
	// Made while no daemon ran, or its event was lost.
	h.k.ScanBlock(pfx("198.51.100.66/32"), h.clock.Now(), h.clock.Now().Add(time.Hour))
	if st := h.reconcile(false); st.Adopted != 1 || st.Removed != 0 {
		t.Errorf("reconcile %+v", st)
	}
	recs := h.stored("198.51.100.66/32")
	if len(recs) != 1 || recs[0].Origin != store.OriginScan || recs[0].Reason != "port scan" {
		t.Errorf("adopted as %+v", recs)
	}
	if got := h.history("198.51.100.66/32"); !slices.Equal(got, []string{"block"}) {
		t.Errorf("history %v", got)
	}
}

func TestReconcileRemovesWhatNoDecisionExplains(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", 0)
	// Written behind the store's back, or left by a decision that ended
	// while no daemon ran.
	h.k.Block(pfx("198.51.100.1/32"), time.Time{})
	h.k.Block(pfx("198.51.100.0/25"), time.Time{})
	if st := h.reconcile(false); st.Removed != 2 {
		t.Errorf("reconcile %+v, want 2 removed", st)
	}
	if _, ok := h.kernel("203.0.113.7/32"); !ok {
		t.Error("a decided block was removed")
	}
	if n := len(h.k.Blocks()); n != 1 {
		t.Errorf("%d kernel entries, want 1", n)
	}
}

func TestReconcileWritesDecisionsBackAfterAReboot(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", 2*time.Hour)
	h.mustBlock("2001:db8:7::/48", 0)
	h.setLists(h.list(h.writeList("list.txt", "198.51.100.0/24\n198.51.100.7\n")))
	h.allow("203.0.113.0/28", 0)

	h.reboot(h.s.Lists()...) // a new, empty kernel
	if st := h.started; st.Written != 4 {
		t.Errorf("reconcile %+v, want 4 written", st)
	}
	k, _ := h.kernel("203.0.113.7/32")
	sameExpiry(t, "the manual block", k.Expires, h.clock.Now().Add(2*time.Hour))
	for _, p := range []string{"2001:db8:7::/48", "198.51.100.0/24", "198.51.100.7/32"} {
		if k, ok := h.kernel(p); !ok || !k.Expires.IsZero() {
			t.Errorf("%s after the reboot: %+v %v", p, k, ok)
		}
	}
	if !slices.Contains(h.k.AllowPrefixes(), pfx("203.0.113.0/28")) {
		t.Errorf("the allowlist was not written back: %v", h.k.AllowPrefixes())
	}
}

func TestReconcileFixesAnExpiryTheKernelGotWrong(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", time.Hour)
	h.k.Block(pfx("203.0.113.7/32"), h.clock.Now().Add(time.Minute))
	if st := h.reconcile(false); st.Fixed != 1 {
		t.Errorf("reconcile %+v, want 1 fixed", st)
	}
	k, _ := h.kernel("203.0.113.7/32")
	sameExpiry(t, "the kernel's entry", k.Expires, h.clock.Now().Add(time.Hour))
}

func TestReconcileMakesTheAllowlistExact(t *testing.T) {
	h := newHarness(t)
	// Left by an earlier run whose settings allowed it.
	h.k.Allow(pfx("198.51.100.0/24"), time.Time{})
	h.reconcile(false)
	allows := h.k.AllowPrefixes()
	if slices.Contains(allows, pfx("198.51.100.0/24")) {
		t.Errorf("a stale allow stays: %v", allows)
	}
	for _, p := range []string{"127.0.0.0/8", "::1/128", "192.0.2.1/32", "2001:db8::1/128"} {
		if !slices.Contains(allows, pfx(p)) {
			t.Errorf("%s is not on the kernel's allowlist: %v", p, allows)
		}
	}
}

func TestReconcileBothWays(t *testing.T) {
	h := newHarness(t)
	// Written behind the store's back: stale unless the kernel made it.
	h.k.Block(pfx("198.51.100.1/32"), time.Time{})
	h.s.Block(root, []string{"198.51.100.2"}, 0, "keep", false)
	h.st.DeleteBlock(store.OriginManual, pfx("198.51.100.2/32")) // store lost it...
	h.s.uncacheBlock(store.OriginManual, pfx("198.51.100.2/32"))

	stats := h.reconcile(false)
	if _, ok := h.kernel("198.51.100.1/32"); ok || stats.Removed != 2 {
		t.Errorf("stale operator entries left: %+v", stats)
	}

	// Recovering a lost store: the kernel's entries become records.
	h.k.Block(pfx("198.51.100.3/32"), time.Time{})
	stats = h.reconcile(true)
	blocks, _ := h.st.Blocks()
	if stats.Adopted != 1 || len(blocks) != 1 || blocks[0].Origin != store.OriginKernel {
		t.Errorf("recovery adopted %+v: %+v", stats, blocks)
	}

	// A decision the kernel lacks (a reboot) is written back.
	h.k.UnblockMany(slices.Values([]netip.Prefix{pfx("198.51.100.3/32")}))
	stats = h.reconcile(false)
	if _, ok := h.kernel("198.51.100.3/32"); !ok || stats.Written != 1 {
		t.Errorf("the missing entry was not written back: %+v", stats)
	}
}

// A store lost whole (corrupt, no backup): the kernel's entries are what
// is left of the decisions, and become its records.
func TestLostStoreIsRebuiltFromTheKernel(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", time.Hour)
	h.scan("198.51.100.66/32")
	h.st.Close()
	if err := os.WriteFile(filepath.Join(h.dir, "hbf.db"), []byte(strings.Repeat("garbage ", 1024)), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := h.open()
	if !rec.Empty || !strings.Contains(rec.Found, "corrupt store") {
		t.Fatalf("recovery %+v", rec)
	}
	manual, scan := h.stored("203.0.113.7/32"), h.stored("198.51.100.66/32")
	if len(manual) != 1 || manual[0].Origin != store.OriginKernel || manual[0].Reason != "found in the kernel when the store was lost" {
		t.Errorf("the manual block came back as %+v", manual)
	}
	if len(scan) != 1 || scan[0].Origin != store.OriginScan {
		t.Errorf("the scan block came back as %+v", scan)
	}
	if _, ok := h.kernel("203.0.113.7/32"); !ok {
		t.Error("the rebuild removed what it rebuilt from")
	}
}

// A store damaged with a backup at hand: the backup's decisions are
// restored and the kernel follows them.
func TestDamagedStoreIsRestoredFromItsBackup(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", 0)
	if err := h.st.Backup(); err != nil {
		t.Fatal(err)
	}
	h.st.Close()
	if err := os.Truncate(filepath.Join(h.dir, "hbf.db"), 0); err != nil {
		t.Fatal(err)
	}
	h.k = kerneltest.NewFake(h.clock.Now) // and the kernel lost its entries: a reboot
	rec := h.open()
	if rec.Empty || !strings.Contains(rec.Did, "restored the backup") {
		t.Fatalf("recovery %+v", rec)
	}
	if recs := h.stored("203.0.113.7/32"); len(recs) != 1 || recs[0].Origin != store.OriginManual {
		t.Errorf("restored %+v", recs)
	}
	if _, ok := h.kernel("203.0.113.7/32"); !ok {
		t.Error("the restored decision is not in the kernel")
	}
}
