package decision

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/store"
)

func TestBlockIsInStoreAndKernel(t *testing.T) {
	h := newHarness(t)
	r := h.block("203.0.113.7", time.Hour)
	if !r.OK || r.Prefix != pfx("203.0.113.7/32") {
		t.Fatalf("block: %+v", r)
	}
	want := h.clock.Now().Add(time.Hour)
	if k, ok := h.kernel("203.0.113.7/32"); !ok {
		t.Error("not in the kernel")
	} else {
		sameExpiry(t, "the kernel's entry", k.Expires, want)
	}
	recs := h.stored("203.0.113.7/32")
	if len(recs) != 1 || recs[0].Origin != store.OriginManual || recs[0].Reason != "manual block" || recs[0].By != root.String() {
		t.Errorf("store: %+v", recs)
	}
	if ev := published[*report.Block](h); len(ev) != 1 || ev[0].Duration != time.Hour {
		t.Errorf("events: %+v", ev)
	}
	if got := h.history("203.0.113.7/32"); !slices.Equal(got, []string{"block"}) {
		t.Errorf("history %v", got)
	}
	audit, _ := os.ReadFile(filepath.Join(h.dir, "audit.log"))
	if !strings.Contains(string(audit), `"action":"block","target":"203.0.113.7","prefix":"203.0.113.7/32","for":"1h0m0s","result":"accepted"`) {
		t.Errorf("audit log: %s", audit)
	}
}

func TestBlockWithoutExpiryIsPermanent(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("2001:db8:7::/48", 0)
	k, ok := h.kernel("2001:db8:7::/48")
	if !ok || !k.Expires.IsZero() {
		t.Errorf("kernel %+v %v, want a permanent entry", k, ok)
	}
	if recs := h.stored("2001:db8:7::/48"); len(recs) != 1 || !recs[0].Expires.IsZero() {
		t.Errorf("store %+v", recs)
	}
}

func TestBlockAgainReplacesTheManualBlock(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", 3*time.Hour)
	h.mustBlock("203.0.113.7", time.Hour)
	if recs := h.stored("203.0.113.7/32"); len(recs) != 1 {
		t.Fatalf("store %+v", recs)
	}
	k, _ := h.kernel("203.0.113.7/32")
	sameExpiry(t, "the kernel's entry", k.Expires, h.clock.Now().Add(time.Hour))
}

// Several decisions on a prefix: the kernel holds the longest.
func TestKernelHoldsTheLatestExpiry(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", time.Hour)
	// The same address blocked for a scan, for longer.
	longer := h.clock.Now().Add(3 * time.Hour)
	h.s.OnScan(scanEvent("203.0.113.7/32", h.clock.Now(), longer))
	h.reconcile(false)
	if k, _ := h.kernel("203.0.113.7/32"); !sameTime(k.Expires, longer) {
		t.Errorf("kernel expiry %v, want the scan's %v", k.Expires, longer)
	}
	// The manual block for longer than the scan's wins in turn.
	h.mustBlock("203.0.113.7", 5*time.Hour)
	k, _ := h.kernel("203.0.113.7/32")
	sameExpiry(t, "the kernel's entry", k.Expires, h.clock.Now().Add(5*time.Hour))
	// And a shorter one after it leaves the scan's in force.
	h.mustBlock("203.0.113.7", time.Minute)
	k, _ = h.kernel("203.0.113.7/32")
	sameExpiry(t, "the kernel's entry", k.Expires, longer)
	if r := h.block("192.0.2.0/24", 0); r.OK || !strings.Contains(r.Error, "an address of this host") {
		t.Errorf("block of the host's range: %+v", r)
	}
}

func TestUnblockRemovesEveryDecisionOfThePrefix(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", time.Hour)
	h.scan("203.0.113.7/32")
	if len(h.stored("203.0.113.7/32")) != 2 {
		t.Fatal("want a manual and a scan record")
	}
	if r := h.unblock("203.0.113.7"); !r.OK {
		t.Fatalf("unblock: %+v", r)
	}
	if _, ok := h.kernel("203.0.113.7/32"); ok || len(h.stored("203.0.113.7/32")) != 0 {
		t.Error("the prefix is still blocked")
	}
	if ev := published[*report.Unblock](h); len(ev) != 1 || ev[0].By != root.String() {
		t.Errorf("events %+v", ev)
	}
}

func TestUnblockOfWhatIsNotBlocked(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.0/24", 0)
	wantError(t, h.unblock("203.0.113.7"), "203.0.113.7/32 is not blocked")
	if _, ok := h.kernel("203.0.113.0/24"); !ok {
		t.Error("the unblock of an address took the prefix holding it")
	}
}

func TestUnblockAll(t *testing.T) {
	h := newHarness(t)
	h.mustBlock("203.0.113.7", 0)
	h.mustBlock("198.51.100.0/24", time.Hour)
	h.scan("2001:db8:9::/64")
	rs := h.s.Unblock(root, nil, true)
	if len(rs) != 3 {
		t.Fatalf("results %+v", rs)
	}
	for _, r := range rs {
		if !r.OK {
			t.Errorf("%+v", r)
		}
	}
	if n := len(h.k.Blocks()); n != 0 {
		t.Errorf("%d kernel entries left", n)
	}
}

func TestAllowIsInStoreAndKernel(t *testing.T) {
	h := newHarness(t)
	if r := h.allow("198.51.100.0/24", time.Hour); !r.OK {
		t.Fatalf("allow: %+v", r)
	}
	if !slices.Contains(h.k.AllowPrefixes(), pfx("198.51.100.0/24")) {
		t.Errorf("kernel allowlist %v", h.k.AllowPrefixes())
	}
	var found bool
	for _, a := range h.s.Allows() {
		found = found || (a.Prefix == pfx("198.51.100.0/24") && a.Origin == string(store.OriginManual))
	}
	if !found {
		t.Errorf("allows %+v", h.s.Allows())
	}
	// What it covers may not be blocked now.
	wantError(t, h.block("198.51.100.7", 0), "198.51.100.7/32 is on the allowlist: never blocked")
	if ev := published[*report.Allow](h); len(ev) != 1 {
		t.Errorf("events %+v", ev)
	}
}

func TestDisallowTakesTheEntryOut(t *testing.T) {
	h := newHarness(t)
	h.allow("198.51.100.0/24", 0)
	if r := h.disallow("198.51.100.0/24"); !r.OK {
		t.Fatalf("disallow: %+v", r)
	}
	if slices.Contains(h.k.AllowPrefixes(), pfx("198.51.100.0/24")) {
		t.Error("still on the kernel's allowlist")
	}
	h.mustBlock("198.51.100.7", 0)
}

func TestDisallowOfAFixedAllowIsRefused(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.disallow("192.0.2.1"), "192.0.2.1/32 is an address of this host: always allowed")
	wantError(t, h.disallow("127.0.0.0/8"), "is loopback: always allowed")
}

func TestDisallowOfWhatIsNotAllowed(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.disallow("198.51.100.0/24"), "198.51.100.0/24 is not on the allowlist")
}

func TestBlockOfEverythingIsRefused(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.block("0.0.0.0/0", 0), "0.0.0.0/0 would block every IPv4 source")
	wantError(t, h.block("::/0", 0), "::/0 would block every IPv6 source")
}

func TestBlockWiderThanTheMinimumIsRefused(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.block("10.0.0.0/7", 0), "10.0.0.0/7 is wider than /8, the narrowest IPv4 block allowed")
	wantError(t, h.block("2001:db8::/31", 0), "2001:db8::/31 is wider than /32, the narrowest IPv6 block allowed")
}

func TestBlockOfLoopbackIsRefused(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.block("127.0.0.1", 0), "127.0.0.1/32 is loopback: never blocked")
	wantError(t, h.block("::1", 0), "::1/128 is loopback: never blocked")
}

func TestBlockOfTheHostIsRefused(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.block("2001:db8::1", 0), "2001:db8::1/128 is an address of this host: never blocked")
	wantError(t, h.block("192.0.2.0/24", 0), "192.0.2.0/24 contains 192.0.2.1/32, an address of this host: never blocked")
}

func TestBlockOfARangeHoldingAnAllowIsRefused(t *testing.T) {
	h := newHarness(t)
	h.allow("198.51.100.7", 0)
	wantError(t, h.block("198.51.100.0/24", 0), "198.51.100.0/24 contains 198.51.100.7/32, on the allowlist: never blocked")
}

func TestBadTargetsAreRefused(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.block("10.0.0.300", 0), `"10.0.0.300" is not an IP or CIDR`)
	wantError(t, h.block("192.0.2.7/24", 0), "has host bits set")
	wantError(t, one(h.s.Block(root, []string{"203.0.113.7"}, -time.Second, "", false)), "--for -1s: must not be negative")
	wantError(t, h.allow("0.0.0.0/0", 0), "would exempt every IPv4 source")
	if n := len(h.k.Blocks()); n != 0 {
		t.Errorf("refused blocks left %d kernel entries", n)
	}
	blocks, _ := h.st.Blocks()
	if len(blocks) != 0 {
		t.Errorf("refused blocks left records: %+v", blocks)
	}
}
