package decision

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/crowdsec"
	"github.com/hbf-firewall/hbf/internal/store"
)

// decided is a CrowdSec decision's record as the bouncer hands it over.
func (h *harness) decided(prefix, origin string, left time.Duration) store.Block {
	now := h.clock.Now()
	return store.Block{Prefix: pfx(prefix), Origin: store.OriginCrowdSec(origin), Reason: "crowdsecurity/ssh-bf",
		By: "crowdsec", Created: now, Expires: now.Add(left)}
}

func (h *harness) applyCrowdSec(put []store.Block, remove []crowdsec.Ref, whole bool) (int, int) {
	h.t.Helper()
	a, err := h.s.ApplyCrowdSec(put, remove, whole)
	if err != nil {
		h.t.Fatal(err)
	}
	return a.Added, a.Removed
}

func TestCrowdSecDecisionsBlockUntilTheLongestEnds(t *testing.T) {
	h := newHarness(t)
	h.applyCrowdSec([]store.Block{h.decided("203.0.113.7/32", "cscli", time.Hour),
		h.decided("203.0.113.7/32", "CAPI", 4*time.Hour), h.decided("2001:db8:bad::/48", "lists", time.Hour)}, nil, false)
	k, ok := h.kernel("203.0.113.7/32")
	if !ok || !sameTime(k.Expires, h.clock.Now().Add(4*time.Hour)) {
		t.Fatalf("the kernel's block %+v (%v), want the longest decision's expiry", k, ok)
	}
	if recs := h.stored("203.0.113.7/32"); len(recs) != 2 {
		t.Fatalf("stored %+v, want a record per decision origin", recs)
	}
	// The longer one deleted: the other holds the block.
	h.applyCrowdSec(nil, []crowdsec.Ref{{Prefix: pfx("203.0.113.7/32"), Origin: "CAPI"}}, false)
	if k, _ := h.kernel("203.0.113.7/32"); !sameTime(k.Expires, h.clock.Now().Add(time.Hour)) {
		t.Errorf("after the CAPI decision's deletion the block ends %v, want the cscli one's", k.Expires)
	}
	if _, ok := h.kernel("2001:db8:bad::/48"); !ok {
		t.Error("the IPv6 range is not blocked")
	}
}

// A snapshot is every decision in force: the CrowdSec records it lacks
// end, and a block of another origin of the same prefix stays.
func TestCrowdSecSnapshotReconciles(t *testing.T) {
	h := newHarness(t)
	h.applyCrowdSec([]store.Block{h.decided("203.0.113.7/32", "cscli", time.Hour),
		h.decided("203.0.113.8/32", "cscli", time.Hour)}, nil, false)
	h.scan("203.0.113.8/32")
	h.clock.Add(10 * time.Second)
	// The same decision read again, with 10 s less left: nothing changes.
	added, removed := h.applyCrowdSec([]store.Block{h.decided("203.0.113.7/32", "cscli", time.Hour-10*time.Second)}, nil, true)
	if added != 0 || removed != 1 {
		t.Fatalf("snapshot: %d added, %d removed; want 0 and the one it lacks", added, removed)
	}
	if recs := h.stored("203.0.113.8/32"); len(recs) != 1 || recs[0].Origin != store.OriginScan {
		t.Errorf("203.0.113.8 holds %+v, want its scan block alone", recs)
	}
	if _, ok := h.kernel("203.0.113.8/32"); !ok {
		t.Error("the scan block left the kernel with the CrowdSec decision")
	}
}

func TestUnblockOfACrowdSecDecisionSaysHowToEndIt(t *testing.T) {
	h := newHarness(t)
	h.applyCrowdSec([]store.Block{h.decided("203.0.113.7/32", "cscli", time.Hour),
		h.decided("198.51.100.0/24", "CAPI", time.Hour)}, nil, false)
	wantError(t, h.unblock("203.0.113.7"), "cscli decisions delete --ip 203.0.113.7")
	wantError(t, h.unblock("198.51.100.0/24"), "cscli decisions delete --range 198.51.100.0/24")
	if _, ok := h.kernel("203.0.113.7/32"); !ok {
		t.Fatal("an unblock ended a CrowdSec decision's block")
	}
	// With a manual block beside it: that one ends, the decision holds.
	h.mustBlock("203.0.113.7", time.Hour)
	r := h.unblock("203.0.113.7")
	if !strings.Contains(r.Error, "unblocked here, but CrowdSec's decisions block") {
		t.Errorf("unblock beside a decision: %+v", r)
	}
	if recs := h.stored("203.0.113.7/32"); len(recs) != 1 || recs[0].Origin != store.OriginCrowdSec("cscli") {
		t.Errorf("stored %+v, want the decision's record alone", recs)
	}
}

// A read of decisions goes to the kernel before the store: when either
// refuses, both are as they were before the read, records and kernel
// entries of other origins of the same prefixes too.
func TestCrowdSecReadRefusedLeavesEverythingAsItWas(t *testing.T) {
	for _, c := range []struct {
		refuser string
		extra   int // more decisions in the read: past bulkFrom, the kernel takes it in bulk
	}{{"kernel", 0}, {"kernel", bulkFrom}, {"store", 0}, {"store", bulkFrom}} {
		refuser := c.refuser
		t.Run(fmt.Sprintf("%s/%d", refuser, 3+c.extra), func(t *testing.T) {
			h := newHarness(t)
			h.applyCrowdSec([]store.Block{h.decided("203.0.113.7/32", "cscli", time.Hour)}, nil, false)
			h.scan("203.0.113.8/32")
			read := []store.Block{h.decided("203.0.113.7/32", "cscli", 4*time.Hour),
				h.decided("203.0.113.8/32", "cscli", 4*time.Hour), h.decided("203.0.113.9/32", "cscli", 4*time.Hour)}
			for i := range c.extra {
				read = append(read, h.decided(fmt.Sprintf("198.51.100.%d/32", i), "cscli", 4*time.Hour))
			}
			if refuser == "kernel" {
				// Whichever way it writes, one by one or in bulk.
				h.k.Refuse(func(op string, p netip.Prefix) error {
					if strings.HasPrefix(op, "Block") && p == pfx("203.0.113.9/32") {
						return errRefused
					}
					return nil
				})
			} else {
				h.st.Close()
			}
			if _, err := h.s.ApplyCrowdSec(read, nil, true); err == nil || !strings.Contains(err.Error(), refuser+":") {
				t.Fatalf("apply: %v, want the %s's refusal", err, refuser)
			}
			if n := h.s.UndoFailures(); n != 0 {
				t.Errorf("%d undo failures, want none", n)
			}
			for p, want := range map[string]time.Duration{"203.0.113.7/32": time.Hour, "203.0.113.8/32": time.Hour} {
				if k, ok := h.kernel(p); !ok || !sameTime(k.Expires, h.clock.Now().Add(want)) {
					t.Errorf("the kernel's block of %s: %+v (%v), want it as before, until %v", p, k, ok, want)
				}
			}
			for _, p := range []string{"203.0.113.9/32", "198.51.100.0/32"} {
				if _, ok := h.kernel(p); ok {
					t.Errorf("the kernel holds %s, of the refused read", p)
				}
			}
			if refuser == "kernel" {
				if recs := h.stored("203.0.113.8/32"); len(recs) != 1 || recs[0].Origin != store.OriginScan {
					t.Errorf("203.0.113.8's records %+v, want its scan block alone", recs)
				}
			}
		})
	}
}
