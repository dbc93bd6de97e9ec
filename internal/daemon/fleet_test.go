package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/etcdtest"
	"github.com/hbf-firewall/hbf/internal/fleet"
	"github.com/hbf-firewall/hbf/internal/store"
)

// joinFleet makes the harness's daemon node "me" of a fleet on etcd.
func (h *harness) joinFleet(etcd *etcdtest.Server, limits func(*Fleet)) {
	h.t.Helper()
	f := Defaults.Start.Fleet
	f.Etcd, f.Node = []string{etcd.Endpoint()}, "me"
	if limits != nil {
		limits(&f)
	}
	h.d.start.Fleet = f
	if err := h.d.openFleet(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(h.d.close)
	background(h.t, h.d.fleet.run)
}

// background runs fn until the test ends.
func background(t *testing.T, fn func(context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// remote runs another node of the fleet, with its addresses.
func remote(t *testing.T, etcd *etcdtest.Server, name string, addrs ...netip.Addr) *fleet.Node {
	t.Helper()
	layout, _ := fleet.NewLayout("/hbf")
	n, err := fleet.NewNode(fleet.Config{Endpoints: []string{etcd.Endpoint()}, Layout: layout, Node: name,
		Member: func() fleet.Member { return fleet.Member{HBF: "test", Addrs: addrs} },
		Log:    slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	background(t, n.Run)
	return n
}

func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fleetBlock(p string, created time.Time, d time.Duration) fleet.Block {
	return fleet.Block{Prefix: pfx(p), Origin: "scan", Reason: "port scan", Created: created, ExpiresAt: created.Add(d)}
}

func TestFleetBlocksApplyThroughThisHostsPolicy(t *testing.T) {
	h := newHarness(t)
	h.clock.Set(time.Now())
	etcd := etcdtest.Start(t, etcdtest.Options{})
	member := netip.MustParseAddr("203.0.113.9")
	a := remote(t, etcd, "a", member)
	h.joinFleet(etcd, nil)
	now := time.Now()
	a.SetOwn([]fleet.Block{fleetBlock("198.51.100.66/32", now, time.Hour),
		fleetBlock("192.0.2.1/32", now, time.Hour),   // this host's own address
		fleetBlock("203.0.113.9/32", now, time.Hour), // a member's
		fleetBlock("10.0.0.0/7", now, time.Hour)})    // wider than this host allows
	// The store is written before the kernel: wait for both.
	eventuallyTrue(t, "a's scan block applied here", func() bool {
		recs := h.stored("198.51.100.66/32")
		_, inKernel := h.kernel("198.51.100.66/32")
		return len(recs) == 1 && recs[0].Origin == store.OriginFleet("a") && inKernel
	})
	if k, ok := h.kernel("198.51.100.66/32"); !ok || !sameTime(k.Expires, now.Add(time.Hour)) {
		t.Errorf("kernel %+v %v", k, ok)
	}
	for _, p := range []string{"192.0.2.1/32", "203.0.113.9/32", "10.0.0.0/7"} {
		if _, ok := h.kernel(p); ok {
			t.Errorf("%s was applied from the fleet", p)
		}
	}
	eventuallyTrue(t, "the refusals counted", func() bool {
		st := h.d.fleetStats()
		return st.Rejected[fleet.RejectProtected] == 2 && st.Rejected[fleet.RejectTooWide] == 1 && st.Connected && st.Members == 2
	})
	wantError(t, h.unblock("198.51.100.66"), "is blocked by the fleet (fleet:a): hbf unblock --fleet ends it everywhere")

	// What this host blocks for a scan goes to the others.
	h.scan("198.51.100.77/32")
	eventuallyTrue(t, "this host's scan block published", func() bool {
		_, ok := a.View().Blocks["me"][pfx("198.51.100.77/32")]
		return ok
	})
}

// An unblock of the fleet ends every node's block made before it: the
// others' here, and this host's own.
func TestFleetUnblockEndsBlocksEverywhere(t *testing.T) {
	h := newHarness(t)
	h.clock.Set(time.Now())
	etcd := etcdtest.Start(t, etcdtest.Options{})
	a := remote(t, etcd, "a")
	h.joinFleet(etcd, nil)
	// An etcd without authentication: any client is the admin.
	h.d.fleet.admin = fleet.NewAdmin(fleet.AdminConfig{Endpoints: []string{etcd.Endpoint()}, Layout: fleet.Layout{Prefix: "/hbf"}})
	h.scan("198.51.100.66/32")
	a.SetOwn([]fleet.Block{fleetBlock("198.51.100.66/32", time.Now(), time.Hour)})
	eventuallyTrue(t, "a's block applied", func() bool { return len(h.stored("198.51.100.66/32")) == 2 })

	rs := h.d.fleetChange(context.Background(), root, "unblock", api.ChangeRequest{Targets: []string{"198.51.100.66"}})
	if !rs[0].OK {
		t.Fatalf("unblock --fleet: %+v", rs[0])
	}
	eventuallyTrue(t, "both blocks ended here", func() bool {
		_, inKernel := h.kernel("198.51.100.66/32")
		return len(h.stored("198.51.100.66/32")) == 0 && !inKernel
	})
}

func TestFleetWideChangesNeedTheAdminCredential(t *testing.T) {
	h := newHarness(t)
	etcd := etcdtest.Start(t, etcdtest.Options{})
	h.joinFleet(etcd, nil)
	for _, action := range []string{"allow", "unblock", "disallow"} {
		rs := h.d.fleetChange(context.Background(), root, action, api.ChangeRequest{Targets: []string{"198.51.100.7"}})
		if rs[0].OK || !strings.Contains(rs[0].Error, "this node holds no fleet admin credential") {
			t.Errorf("%s --fleet without the credential: %+v", action, rs[0])
		}
	}
}
