package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

func TestPinPathMustBeOnBPFFS(t *testing.T) {
	err := ensureBPFFS(filepath.Join(t.TempDir(), "pins"))
	if err == nil || !strings.Contains(err.Error(), "is not on a BPF filesystem") {
		t.Errorf("pin path on tmpfs: %v", err)
	}
}

// testPinPath is a pin path of the test's own on the bpffs, removed after it.
func testPinPath(t *testing.T) string {
	t.Helper()
	testenv.RequirePrivileged(t)
	if err := ensureBPFFS(DefaultBPFFS); err != nil {
		t.Fatal(err)
	}
	pin, err := os.MkdirTemp(DefaultBPFFS, "hbftest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pin) })
	return pin
}

func TestPinnedMapsAreAdopted(t *testing.T) {
	pin := testPinPath(t)

	first, err := Load(Options{PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	if first.Adopted() {
		t.Error("a fresh pin path reported adoption")
	}
	if err := first.Block(mustPrefix("192.0.2.7/32"), noExpiry); err != nil {
		t.Fatal(err)
	}
	if err := first.Block(mustPrefix("198.51.100.0/24"), noExpiry); err != nil {
		t.Fatal(err)
	}
	first.Close()

	second, err := Load(Options{PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if !second.Adopted() {
		t.Error("the pinned maps were not adopted")
	}
	blocks, err := second.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 {
		t.Errorf("adopted %d blocks, want 2", len(blocks))
	}
	// The adopted prefix block must be enforced: the hint follows the map.
	var hint uint32
	if err := second.objs.HbfHaveBlockPrefixes.Get(&hint); err != nil || hint != 1 {
		t.Errorf("prefix hint %d (%v) after adoption, want 1", hint, err)
	}
	if err := second.Unpin(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pin, layoutVersion)); !os.IsNotExist(err) {
		t.Errorf("pins left after Unpin: %v", err)
	}
}

// A layout left by an earlier version is migrated: its state copied into
// the new maps before they are pinned, its link moved over with the new
// program swapped in, blocks made meanwhile caught up, its pins removed.
// (The earlier layout here is this one renamed; test/e2e runs the real
// earlier release.)
func TestEarlierLayoutIsMigrated(t *testing.T) {
	pin := testPinPath(t)
	// The lab host's own loopback: nothing else's traffic runs there.
	inLab, earlier := pinEarlierLayout(t, pin, "lo", "192.0.2.7/32", "198.51.100.0/24", "2001:db8::7/128")
	shareExactBlocks(t, earlier)

	next, err := Load(Options{PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if next.Adopted() || next.Migrating() != earlier {
		t.Fatalf("adopted %v, migrating %q: want a migration from %s", next.Adopted(), next.Migrating(), earlier)
	}
	if got := blockSet(t, next); got != "192.0.2.7/32 198.51.100.0/24 2001:db8::7/128" {
		t.Errorf("blocks after the copy: %s", got)
	}
	for src, dst := range map[string]string{"192.0.2.7": "192.0.2.1", "2001:db8::7": "2001:db8::1"} {
		f := tcpSYN(src, dst, 40000, 443).with(func(f *frame) { f.flags = ack })
		if v, err := next.runFrame(f.bytes()); err != nil || v != xdpDrop {
			t.Errorf("%s, blocked in the shared map: %s (%v), want it dropped", src, verdict(v), err)
		}
	}
	// A block the old program makes before the switch.
	oldBlocks, err := loadPinnedBlocks(earlier)
	if err != nil {
		t.Fatal(err)
	}
	if err := oldBlocks.Put(hbfAddr{B: mustPrefix("203.0.113.9/32").Addr().As16()}, next.newRule(128, noExpiry, OriginScan)); err != nil {
		t.Fatal(err)
	}
	oldBlocks.Close()

	var b *Attachment
	inLab(func() (err error) { b, err = next.Attach("lo", XDPGeneric); return err })
	defer b.Detach()
	if b.Mode != XDPAdopted {
		t.Errorf("attach mode %s, want the earlier link adopted", b.Mode)
	}
	if n, err := next.FinishMigration(); err != nil || n != 1 {
		t.Errorf("caught up %d blocks (%v), want 1", n, err)
	}
	if got := blockSet(t, next); got != "192.0.2.7/32 198.51.100.0/24 2001:db8::7/128 203.0.113.9/32" {
		t.Errorf("blocks after the migration: %s", got)
	}
	if _, err := os.Stat(earlier); !os.IsNotExist(err) {
		t.Errorf("the earlier layout's pins are still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(pin, layoutVersion, "links", "lo")); err != nil {
		t.Errorf("the link is not pinned in the new layout: %v", err)
	}
}

func (d *Dataplane) mustBlockAll(t *testing.T, prefixes ...string) {
	t.Helper()
	for _, p := range prefixes {
		if err := d.Block(mustPrefix(p), noExpiry); err != nil {
			t.Fatal(err)
		}
	}
}

func blockSet(t *testing.T, d *Dataplane) string {
	t.Helper()
	rules, err := d.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rules {
		out = append(out, r.Prefix.String())
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func loadPinnedBlocks(layoutDir string) (*ebpf.Map, error) {
	return ebpf.LoadPinnedMap(filepath.Join(layoutDir, "maps", sharedBlocksMap), nil)
}

// shareExactBlocks turns the exact blocks pinned in layoutDir into the one
// map of layouts before v7, keyed by 16 bytes, IPv4 mapped.
func shareExactBlocks(t *testing.T, layoutDir string) {
	t.Helper()
	shared, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, Flags: unix.BPF_F_NO_PREALLOC, MaxEntries: 1 << 20,
		KeySize: uint32(binary.Size(hbfAddr{})), ValueSize: uint32(binary.Size(hbfRule{}))})
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	for _, name := range []string{hbfMapBlocks4, hbfMapBlocks6} {
		path := filepath.Join(layoutDir, "maps", name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		var r hbfRule
		if name == hbfMapBlocks4 {
			var k hbfAddr4
			for it := m.Iterate(); it.Next(&k, &r); {
				err = errors.Join(err, shared.Put(mappedOf(k), r))
			}
		} else {
			var k hbfAddr
			for it := m.Iterate(); it.Next(&k, &r); {
				err = errors.Join(err, shared.Put(k, r))
			}
		}
		m.Close()
		if err = errors.Join(err, os.Remove(path)); err != nil {
			t.Fatal(err)
		}
	}
	if err := shared.Pin(filepath.Join(layoutDir, "maps", sharedBlocksMap)); err != nil {
		t.Fatal(err)
	}
}

// An earlier layout ran at XDP only: a migration into TCX copies its
// state, attaches through TCX first, and only then retires the earlier
// XDP link, so that the migration completes with nothing of it left.
// An earlier layout that ran at TCX (v2 could) hands its TCX link over:
// the new program is swapped into it, and nothing of the earlier layout
// stays attached.
func TestEarlierTCXLayoutIsMigrated(t *testing.T) {
	pin := testPinPath(t)
	inLab, earlier := pinEarlierLayoutAt(t, HookTCX, pin, netlab.Iface, "192.0.2.7/32")
	next, err := Load(Options{PinPath: pin, Hook: HookTCX})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	var b *Attachment
	inLab(func() (err error) { b, err = next.Attach(netlab.Iface, XDPAuto); return err })
	defer b.Detach()
	if b.Mode != XDPAdopted {
		t.Errorf("attach mode %s, want the earlier TCX link adopted", b.Mode)
	}
	if _, err := next.FinishMigration(); err != nil {
		t.Fatalf("finish the migration: %v", err)
	}
	if _, err := os.Stat(earlier); !os.IsNotExist(err) {
		t.Errorf("the earlier layout's pins are still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(pin, layoutVersion, "tcx-links", netlab.Iface)); err != nil {
		t.Errorf("the TCX link is not pinned in the new layout: %v", err)
	}
	var chain Chain
	inLab(func() (err error) { chain, err = ChainOf(netlab.Iface); return err })
	if n := len(chain.TCX); n != 1 || !next.Own(chain.TCX[0].ID) {
		t.Errorf("TCX chain %+v, want this program alone", chain.TCX)
	}
}

func TestEarlierLayoutIsMigratedToTCX(t *testing.T) {
	pin := testPinPath(t)
	inLab, earlier := pinEarlierLayout(t, pin, netlab.Iface, "192.0.2.7/32")

	next, err := Load(Options{PinPath: pin, Hook: HookTCX})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	var b *Attachment
	inLab(func() (err error) { b, err = next.Attach(netlab.Iface, XDPAuto); return err })
	defer b.Detach()
	if b.Mode != ModeTCX {
		t.Errorf("attach mode %s, want %s", b.Mode, ModeTCX)
	}
	var retired bool
	inLab(func() (err error) { retired, err = next.RetireOtherHook(netlab.Iface); return err })
	if !retired {
		t.Error("the earlier layout's XDP link was not retired")
	}
	if _, err := next.FinishMigration(); err != nil {
		t.Errorf("finish the migration: %v", err)
	}
	if got := blockSet(t, next); got != "192.0.2.7/32" {
		t.Errorf("blocks after the migration: %s", got)
	}
	var chain Chain
	inLab(func() (err error) { chain, err = ChainOf(netlab.Iface); return err })
	if chain.XDP != nil || len(chain.TCX) != 1 || chain.TCX[0].ID != next.ProgramID() {
		t.Errorf("the interface runs %+v (xdp %v): want hbf's TCX program alone", chain, chain.XDP)
	}
	if _, err := os.Stat(earlier); !os.IsNotExist(err) {
		t.Errorf("the earlier layout's pins are still there: %v", err)
	}
}

// pinEarlierLayout leaves under pin the layout of an earlier release (this
// one's, renamed) holding blocks, its XDP link attached to iface in a lab
// of its own. It returns a runner in the lab and the layout's folder.
func pinEarlierLayout(t *testing.T, pin, iface string, blocks ...string) (inLab func(func() error), earlier string) {
	return pinEarlierLayoutAt(t, HookXDP, pin, iface, blocks...)
}

// pinEarlierLayoutAt is pinEarlierLayout with the earlier program at hook h.
func pinEarlierLayoutAt(t *testing.T, h Hook, pin, iface string, blocks ...string) (inLab func(func() error), earlier string) {
	t.Helper()
	lab, err := netlab.New(context.Background(), netlab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	inLab = func(f func() error) {
		t.Helper()
		if err := lab.Host.Do(f); err != nil {
			t.Fatal(err)
		}
	}
	old, err := Load(Options{PinPath: pin, Hook: h})
	if err != nil {
		t.Fatal(err)
	}
	old.mustBlockAll(t, blocks...)
	var a *Attachment
	mode := XDPGeneric
	if h == HookTCX {
		mode = XDPAuto
	}
	inLab(func() (err error) { a, err = old.Attach(iface, mode); return err })
	a.Release()
	old.Close()
	earlier = filepath.Join(pin, earlierLayouts[0])
	if err := os.Rename(filepath.Join(pin, layoutVersion), earlier); err != nil {
		t.Fatal(err)
	}
	return inLab, earlier
}

// A new capacity across a restart copies every block into maps of the new
// size, and the new program takes over the pinned link: nothing is lost.
// A capacity below the blocks in force is refused, naming the count.
func TestCapacityChangeKeepsEveryBlock(t *testing.T) {
	pin := testPinPath(t)
	lab, err := netlab.New(context.Background(), netlab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	inLab := func(f func() error) {
		t.Helper()
		if err := lab.Host.Do(f); err != nil {
			t.Fatal(err)
		}
	}
	old, err := Load(Options{PinPath: pin, Capacity: Capacity{Blocks: 2048}})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 1500 {
		want = append(want, netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String()+"/32")
	}
	old.mustBlockAll(t, want...)
	var a *Attachment
	inLab(func() (err error) { a, err = old.Attach("lo", XDPGeneric); return err })
	a.Release()
	old.Close()

	_, err = Load(Options{PinPath: pin, Capacity: Capacity{Blocks: 1024}})
	if err == nil || !strings.Contains(err.Error(), "holds 1500 entries, more than the new capacity 1024: raise the capacity to 1500") {
		t.Fatalf("shrinking below the blocks in force: %v", err)
	}

	next, err := Load(Options{PinPath: pin, Capacity: Capacity{Blocks: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if next.Migrating() == "" || next.Capacity().Blocks != 4096 {
		t.Fatalf("migrating %q, capacity %+v: want a resize to 4096", next.Migrating(), next.Capacity())
	}
	var b *Attachment
	inLab(func() (err error) { b, err = next.Attach("lo", XDPGeneric); return err })
	defer b.Detach()
	if b.Mode != XDPAdopted {
		t.Errorf("attach mode %s, want the pinned link adopted", b.Mode)
	}
	if _, err := next.FinishMigration(); err != nil {
		t.Fatal(err)
	}
	rules, err := next.Blocks()
	if err != nil || len(rules) != 1500 {
		t.Fatalf("%d blocks after the resize (%v), want 1500", len(rules), err)
	}
	if _, err := os.Stat(filepath.Join(pin, resizedLayout)); !os.IsNotExist(err) {
		t.Errorf("the pins set aside are still there: %v", err)
	}
}
