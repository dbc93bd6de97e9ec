package daemon

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/sources"
	"github.com/hbf-firewall/hbf/internal/store"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

var root = api.Caller{UID: 0}

func newTestState(t *testing.T, list string) (*state, *dataplane.Dataplane, *store.Store) {
	t.Helper()
	testenv.RequirePrivileged(t)
	dp, err := dataplane.Load(dataplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	dir := t.TempDir()
	st, _, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	audit, err := openAudit(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { audit.close() })
	fixed := []fixedAllow{{prefix: netip.MustParsePrefix("192.0.2.1/32"), origin: "host", why: "an address of this host"}}
	s, err := newState(dp, st, policy.DefaultRules, fixed, audit, func(report.Event) {},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if list != "" {
		path := filepath.Join(dir, "list.txt")
		os.WriteFile(path, []byte(list), 0o600)
		f, err := sources.ReadFile(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.SetLists([]*listSource{{spec: sourceSpec{where: path}, list: f.List}})
	}
	if _, err := s.Reconcile(false); err != nil {
		t.Fatal(err)
	}
	return s, dp, st
}

func kernelExpiry(t *testing.T, dp *dataplane.Dataplane, p string) (time.Time, bool) {
	t.Helper()
	r, ok, err := dp.LookupBlock(netip.MustParsePrefix(p))
	if err != nil {
		t.Fatal(err)
	}
	return r.Expires, ok
}

func TestListedEntriesOutliveUnblock(t *testing.T) {
	s, dp, _ := newTestState(t, "198.51.100.7\n")
	res := s.Unblock(root, []string{"198.51.100.7"}, false)
	if res[0].OK || !strings.Contains(res[0].Error, "is listed in") {
		t.Errorf("unblock of a listed address: %+v", res[0])
	}
	// A manual block on top: unblocking it leaves the list's, permanent.
	s.Block(root, []string{"198.51.100.7"}, time.Hour, "")
	res = s.Unblock(root, []string{"198.51.100.7"}, false)
	if res[0].OK || !strings.Contains(res[0].Error, "stays blocked until removed there") {
		t.Errorf("unblock of a listed and manual address: %+v", res[0])
	}
	if exp, ok := kernelExpiry(t, dp, "198.51.100.7/32"); !ok || !exp.IsZero() {
		t.Errorf("kernel entry after the unblock: %v %v, want the list's permanent one", exp, ok)
	}
}

func TestKernelHoldsTheLatestExpiry(t *testing.T) {
	s, dp, _ := newTestState(t, "")
	s.Block(root, []string{"203.0.113.7"}, time.Hour, "")
	// The same address blocked for a scan, for longer.
	longer := time.Now().Add(3 * time.Hour)
	s.OnScan(&dataplane.Scan{Time: time.Now(), Src: netip.MustParseAddr("203.0.113.7"),
		Source: netip.MustParsePrefix("203.0.113.7/32"), Blocked: true, Expires: longer})
	if _, err := s.Reconcile(false); err != nil {
		t.Fatal(err)
	}
	if exp, _ := kernelExpiry(t, dp, "203.0.113.7/32"); !sameTime(exp, longer) {
		t.Errorf("kernel expiry %v, want the scan's %v", exp, longer)
	}
	if r := s.Block(root, []string{"192.0.2.0/24"}, 0, ""); r[0].OK || !strings.Contains(r[0].Error, "an address of this host") {
		t.Errorf("block of the host's range: %+v", r[0])
	}
}

func TestReconcileBothWays(t *testing.T) {
	s, dp, st := newTestState(t, "")
	// Written behind the store's back: stale unless the kernel made it.
	dp.Block(netip.MustParsePrefix("198.51.100.1/32"), time.Time{})
	s.Block(root, []string{"198.51.100.2"}, 0, "keep")
	st.DeleteBlock(store.OriginManual, netip.MustParsePrefix("198.51.100.2/32")) // store lost it...
	s.uncacheBlock(store.OriginManual, netip.MustParsePrefix("198.51.100.2/32"))

	stats, err := s.Reconcile(false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := kernelExpiry(t, dp, "198.51.100.1/32"); ok || stats.Removed != 2 {
		t.Errorf("stale operator entries left: %+v", stats)
	}

	// Recovering a lost store: the kernel's entries become records.
	dp.Block(netip.MustParsePrefix("198.51.100.3/32"), time.Time{})
	stats, err = s.Reconcile(true)
	if err != nil {
		t.Fatal(err)
	}
	blocks, _ := st.Blocks()
	if stats.Adopted != 1 || len(blocks) != 1 || blocks[0].Origin != store.OriginKernel {
		t.Errorf("recovery adopted %+v: %+v", stats, blocks)
	}

	// A decision the kernel lacks (a reboot) is written back.
	dp.UnblockMany(func(yield func(netip.Prefix) bool) { yield(netip.MustParsePrefix("198.51.100.3/32")) })
	stats, _ = s.Reconcile(false)
	if _, ok := kernelExpiry(t, dp, "198.51.100.3/32"); !ok || stats.Written != 1 {
		t.Errorf("the missing entry was not written back: %+v", stats)
	}
}
