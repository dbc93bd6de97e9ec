package dataplane

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/hbf-firewall/hbf/internal/netlab"
)

// countingTCX is another tool's TCX program: it counts what reaches it
// (slot 0), and apart the IPv4 packets from "from" (slot 1), and lets the
// next program decide.
func countingTCX(t *testing.T, from netip.Addr) (*ebpf.Program, *ebpf.Map) {
	t.Helper()
	seen, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seen.Close() })
	count := func(slot int32, label string) asm.Instructions {
		return asm.Instructions{
			asm.StoreImm(asm.RFP, -4, int64(slot), asm.Word).WithSymbol(label),
			asm.LoadMapPtr(asm.R1, seen.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		}
	}
	src := int32(0)
	if from.Is4() {
		src = int32(binary.LittleEndian.Uint32(from.AsSlice())) // as loaded from the frame
	}
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	insns = append(insns, count(0, "all")...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R6, 76, asm.Word), // skb->data
		asm.LoadMem(asm.R3, asm.R6, 80, asm.Word), // skb->data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 34), // Ethernet and IPv4 headers
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R5, asm.R2, 26, asm.Word), // the IPv4 source
		asm.JNE.Imm(asm.R5, src, "out"),
	)
	insns = append(insns, count(1, "from")...)
	insns = append(insns, asm.Mov.Imm(asm.R0, tcActUnspec).WithSymbol("out"), asm.Return())
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, AttachType: ebpf.AttachTCXIngress, License: "MIT", Instructions: insns,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog, seen
}

func seenBy(t *testing.T, m *ebpf.Map, slot uint32) uint64 {
	t.Helper()
	var n uint64
	if err := m.Lookup(slot, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// At TC ingress through TCX, the program enforces on a real interface
// beside another tool's TCX program: at the head, it sees every packet
// first, and what it drops never reaches the program after it. A link
// detached from outside is attached again, and the next process adopts
// the pinned link, its maps and their blocks.
func TestTCXEnforcesBesideOtherPrograms(t *testing.T) {
	pin := testPinPath(t)
	lab, err := netlab.New(context.Background(), netlab.Options{Peers: []string{"client", "blocked"}})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	inHost := func(f func() error) {
		t.Helper()
		if err := lab.Host.Do(f); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := lab.Host.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	target := netip.AddrPortFrom(lab.Host.Addr4, 8080)
	probe := func(from string) string {
		return lab.Peers[from].Probe(context.Background(), target, time.Second)
	}

	// Another tool's program, there first; hbf goes ahead of it.
	other, seen := countingTCX(t, lab.Peers["blocked"].Addr4)
	var ifindex int
	inHost(func() error {
		ifc, err := net.InterfaceByName(netlab.Iface)
		if err != nil {
			return err
		}
		ifindex = ifc.Index
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: other, Attach: ebpf.AttachTCXIngress})
		if err == nil {
			t.Cleanup(func() { l.Close() })
		}
		return err
	})

	dp, err := Load(Options{PinPath: pin, Hook: HookTCX})
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.SetSettings(defaults); err != nil {
		t.Fatal(err)
	}
	var a *Attachment
	inHost(func() (err error) { a, err = dp.Attach(netlab.Iface, XDPAuto); return err })
	if a.Mode != ModeTCX {
		t.Errorf("attached in mode %s, want %s", a.Mode, ModeTCX)
	}
	var ids []uint32
	inHost(func() (err error) { ids, err = tcxPrograms(ifindex); return err })
	if len(ids) == 0 || ids[0] != dp.ProgramID() {
		t.Errorf("TC ingress runs %v, want hbf's %d first", ids, dp.ProgramID())
	}

	if got := probe("client"); got != "open" {
		t.Fatalf("the client: %s, want open", got)
	}
	if err := dp.Block(netip.PrefixFrom(lab.Peers["blocked"].Addr4, 32), noExpiry); err != nil {
		t.Fatal(err)
	}
	before := seenBy(t, seen, 0)
	fromBlocked := seenBy(t, seen, 1)
	dropsBefore := dp.mustCounters(t).Dropped[DropBlocked]
	if got := probe("blocked"); got != "filtered" {
		t.Errorf("the blocked source: %s, want filtered", got)
	}
	drops := dp.mustCounters(t).Dropped[DropBlocked] - dropsBefore
	if drops == 0 {
		t.Errorf("no drop counted for the blocked source")
	}
	if n := seenBy(t, seen, 1) - fromBlocked; n != 0 {
		t.Errorf("%d IPv4 packets of the blocked source reached the program after hbf, want none", n)
	}
	if got := probe("client"); got != "open" {
		t.Errorf("the client beside the blocked source: %s, want open", got)
	}
	if seenBy(t, seen, 0) == before {
		t.Errorf("the program after hbf saw nothing: a pass must let the next program decide")
	}

	// Another program put ahead of hbf: the check moves hbf back to the
	// head, and leaves the other program in the chain.
	ahead, _ := countingTCX(t, netip.Addr{})
	inHost(func() error {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: ahead, Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
		if err == nil {
			t.Cleanup(func() { l.Close() })
		}
		return err
	})
	var moved string
	inHost(func() (err error) { moved, err = dp.CheckAttachment(a, XDPAuto); return err })
	if moved != RepairHead {
		t.Errorf("repaired %q, want %q", moved, RepairHead)
	}
	inHost(func() (err error) { ids, err = tcxPrograms(ifindex); return err })
	if len(ids) != 3 || ids[0] != dp.ProgramID() {
		t.Errorf("TC ingress runs %v, want hbf's %d first of 3", ids, dp.ProgramID())
	}
	if got := probe("blocked"); got != "filtered" {
		t.Errorf("after the move to the head the blocked source: %s, want filtered", got)
	}

	// Detached from outside: the check attaches it again.
	if err := a.link.Detach(); err != nil {
		t.Fatal(err)
	}
	if got := probe("blocked"); got != "open" {
		t.Fatalf("after the detach the blocked source: %s, want open (the check must have something to repair)", got)
	}
	var kind string
	inHost(func() (err error) { kind, err = dp.CheckAttachment(a, XDPAuto); return err })
	if kind != RepairLink {
		t.Errorf("repaired %q, want %q", kind, RepairLink)
	}
	if got := probe("blocked"); got != "filtered" {
		t.Errorf("after the repair the blocked source: %s, want filtered", got)
	}

	// The next process adopts the pinned link and the maps.
	a.Release()
	dp.Close()
	next, err := Load(Options{PinPath: pin, Hook: HookTCX})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	var b *Attachment
	inHost(func() (err error) { b, err = next.Attach(netlab.Iface, XDPAuto); return err })
	if b.Mode != XDPAdopted || !next.Adopted() {
		t.Errorf("mode %s, maps adopted %v: want the pinned link and maps adopted", b.Mode, next.Adopted())
	}
	if got := probe("blocked"); got != "filtered" {
		t.Errorf("after the adoption the blocked source: %s, want filtered", got)
	}
	if err := b.Detach(); err != nil {
		t.Fatal(err)
	}
	fromBlocked = seenBy(t, seen, 1)
	if got := probe("blocked"); got != "open" {
		t.Errorf("after the detach the blocked source: %s, want open", got)
	}
	if seenBy(t, seen, 1) == fromBlocked {
		t.Errorf("the other program saw none of the source's packets once hbf was gone: its count is broken")
	}
	if detached, err := Uninstall(pin); err != nil || len(detached) != 0 {
		t.Errorf("uninstall after the detach: %v, %v: want nothing left to detach", detached, err)
	}
}

func (d *Dataplane) mustCounters(t *testing.T) Counters {
	t.Helper()
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// At the tail, the program goes after the others at TC ingress and stays
// there: no move to the head.
func TestTCXTailStaysBehind(t *testing.T) {
	lab, err := netlab.New(context.Background(), netlab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	other, _ := countingTCX(t, netip.Addr{})
	dp, err := Load(Options{Hook: HookTCX, TCXTail: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	var a *Attachment
	if err := lab.Host.Do(func() (err error) {
		ifc, err := net.InterfaceByName(netlab.Iface)
		if err != nil {
			return err
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: other, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		if a, err = dp.Attach(netlab.Iface, XDPAuto); err != nil {
			return err
		}
		kind, err := dp.CheckAttachment(a, XDPAuto)
		if kind != "" {
			t.Errorf("the check at the tail repaired %q, want nothing", kind)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer a.Detach()
	var ids []uint32
	if err := lab.Host.Do(func() (err error) { ids, err = tcxPrograms(a.Ifindex); return err }); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || ids[1] != dp.ProgramID() {
		t.Errorf("TC ingress runs %v, want hbf's %d last", ids, dp.ProgramID())
	}
}
