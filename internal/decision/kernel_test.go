package decision

import (
	"net/netip"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/store"
)

// limitBlock is the kernel blocking src for a connection limit of port 22
// for the block duration, and the daemon hearing of it.
func (h *harness) limitBlock(src string, escalate bool) (time.Time, string) {
	now := h.clock.Now()
	p := pfx(src)
	h.k.KernelBlock(p, now, now.Add(time.Hour), dataplane.OriginLimit)
	ev := &dataplane.LimitExceeded{Time: now, Src: netip.AddrPortFrom(p.Addr(), 40000), Source: p,
		Port: ports.Port{Num: 22}, Count: 6, Window: 30 * time.Second, Blocked: true, Expires: now.Add(time.Hour)}
	return h.s.OnLimit(ev, escalate)
}

func TestLimitBlocksAreRecordedWithTheirPort(t *testing.T) {
	h := newHarness(t)
	expires, reason := h.limitBlock("203.0.113.7/32", false)
	if reason != "connection limit 22/tcp" {
		t.Errorf("reason %q, want connection limit 22/tcp", reason)
	}
	recs := h.stored("203.0.113.7/32")
	if len(recs) != 1 || recs[0].Origin != store.OriginLimit || recs[0].Reason != reason ||
		!sameTime(recs[0].Expires, expires) || len(recs[0].Ports) != 1 || recs[0].Ports[0].Port != 22 {
		t.Fatalf("stored %+v, want one limit block for 22/tcp", recs)
	}
	// No escalation unless the limit asks for it: a second offence gets
	// the block duration again.
	h.clock.Add(2 * time.Hour)
	expires, reason = h.limitBlock("203.0.113.7/32", false)
	if got := expires.Sub(h.clock.Now()); got != time.Hour || reason != "connection limit 22/tcp" {
		t.Errorf("second offence without escalation: %s, %q; want 1h, connection limit 22/tcp", got, reason)
	}
}

func TestEscalatingLimitLengthensRepeatOffences(t *testing.T) {
	h := newHarness(t)
	h.limitBlock("203.0.113.8/32", true)
	h.clock.Add(2 * time.Hour)
	expires, reason := h.limitBlock("203.0.113.8/32", true)
	if got := expires.Sub(h.clock.Now()); got != 24*time.Hour || reason != "connection limit 22/tcp (offence 2)" {
		t.Errorf("second offence of an escalating limit: %s, %q; want 24h, offence 2", got, reason)
	}
	if k, _ := h.kernel("203.0.113.8/32"); !sameTime(k.Expires, expires) {
		t.Errorf("the kernel's block ends %v, want %v", k.Expires, expires)
	}
}

func TestLimitBlocksShareAsTheirOwnClass(t *testing.T) {
	h := newHarness(t)
	h.limitBlock("203.0.113.9/32", false)
	h.scan("203.0.113.10/32")
	if got := h.s.Shareable(Share{Scans: true}); len(got) != 1 || got[0].Origin != "scan" {
		t.Errorf("scans shared: %+v, want the scan block only", got)
	}
	got := h.s.Shareable(Share{Limits: true})
	if len(got) != 1 || got[0].Origin != "limit" || got[0].Prefix != pfx("203.0.113.9/32") || got[0].Reason != "connection limit 22/tcp" {
		t.Errorf("limits shared: %+v, want the limit block only", got)
	}
}

// A limit block the kernel made while no daemon ran is adopted, not
// removed as stale.
func TestReconcileAdoptsLimitBlocks(t *testing.T) {
	h := newHarness(t)
	now := h.clock.Now()
	h.k.KernelBlock(pfx("203.0.113.11/32"), now, now.Add(time.Hour), dataplane.OriginLimit)
	if st := h.reconcile(false); st.Adopted != 1 {
		t.Fatalf("reconcile adopted %d blocks, want 1", st.Adopted)
	}
	recs := h.stored("203.0.113.11/32")
	if len(recs) != 1 || recs[0].Origin != store.OriginLimit {
		t.Fatalf("stored %+v, want the kernel's limit block", recs)
	}
	if _, ok := h.kernel("203.0.113.11/32"); !ok {
		t.Fatal("the kernel's limit block was removed")
	}
}
