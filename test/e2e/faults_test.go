package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// xdpFilterInUse lets one test at a time hold xdp-filter: its runs share a
// lockfile ("Unable to read PID from lockfile"), and its filter maps and
// state under the global /sys/fs/bpf/xdp-filter, so that one test's unload
// or addresses are another's.
var xdpFilterInUse sync.Mutex

// xdpFilter loads xdp-filter (libxdp, attached through netlink) on the
// host's interface, with libxdp's own pins in a folder of the test; its
// maps go to the global /sys/fs/bpf/xdp-filter, which unload --all removes.
// It returns a runner of further xdp-filter commands.
func xdpFilter(t *testing.T, ns *netlab.NS) func(args ...string) (string, error) {
	t.Helper()
	testenv.RequireCommand(t, "xdp-filter")
	xdpFilterInUse.Lock()
	t.Cleanup(xdpFilterInUse.Unlock) // after the unload below: cleanups run last first
	bpffs, err := os.MkdirTemp("/sys/fs/bpf", "hbftestlibxdp")
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := ns.Command(ctx, "xdp-filter", args...)
		cmd.Env = append(cmd.Env, "LIBXDP_BPFFS="+bpffs)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		run("unload", "--all")
		// libxdp may still hold a lock on the folder for a moment.
		for range 20 {
			if os.RemoveAll(bpffs) == nil {
				if _, err := os.Stat(bpffs); os.IsNotExist(err) {
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("cannot remove libxdp's folder %s", bpffs)
	})
	if out, err := run("load", netlab.Iface, "--mode", "skb"); err != nil {
		t.Fatalf("xdp-filter load: %v: %s", err, out)
	}
	return run
}

// passAll attaches, from the test, a program that passes everything to the
// host's interface through a bpf_link the test holds: another tool's.
func passAll(t *testing.T, ns *netlab.NS) link.Link {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}, // XDP_PASS
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	var l link.Link
	if err := ns.Do(func() error {
		ifc, err := netInterface(netlab.Iface)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc, Flags: link.XDPGenericMode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Another tool's XDP program on the interface: hbf refuses to start and
// says why and what to do; with --replace it detaches that program, whether
// attached through netlink (xdp-filter) or held in a bpf_link.
func TestForeignXDPProgram(t *testing.T) {
	t.Parallel()
	for _, foreign := range []string{"xdp-filter", "bpf_link"} {
		t.Run(foreign, func(t *testing.T) {
			lab := newLab(t, netlab.Options{Peers: []string{"scanner"}})
			var theirs, elsewhere link.Link
			if foreign == "xdp-filter" {
				xdpFilter(t, lab.Host)
			} else {
				theirs = passAll(t, lab.Host)
				// The same interface name (and most often index) in another
				// namespace: --replace must not touch it.
				elsewhere = passAll(t, newLab(t, netlab.Options{}).Host)
			}
			refusing := tryDaemon(t, lab)
			if err := refusing.wait(30 * time.Second); err == nil {
				t.Fatal("hbf started beside another XDP program")
			}
			refused := refusing.stderrText()
			for _, want := range []string{"another XDP program is attached (program ", "--attach tcx", "--replace"} {
				if !strings.Contains(refused, want) {
					t.Errorf("refusal does not say %q:\n%s", want, refused)
				}
			}
			d := startDaemon(t, lab, "--replace")
			if !strings.Contains(d.stderrText(), "detached another XDP program") {
				t.Errorf("the replacement is not logged:\n%s", d.stderrText())
			}
			if n := xdpPrograms(t, lab.Host); n != 1 {
				t.Errorf("%d XDP programs on the interface, want 1", n)
			}
			out, _ := lab.Host.Run(context.Background(), "ip", "-d", "link", "show", netlab.Iface)
			if !strings.Contains(out, "hbf_xdp") {
				t.Errorf("the interface does not run hbf's program:\n%s", out)
			}
			if theirs != nil {
				if info, err := theirs.Info(); err != nil || info.XDP().Ifindex != 0 {
					t.Errorf("the other tool's link is still attached (%+v, %v)", info, err)
				}
				if info, err := elsewhere.Info(); err != nil || info.XDP().Ifindex == 0 {
					t.Errorf("--replace detached a program of another namespace (%+v, %v)", info, err)
				}
			}
			// hbf enforces.
			scanner := lab.Peers["scanner"]
			serveHTTP(t, lab.Host, 8080)
			for port := 8080; port <= 8083; port++ {
				dialOutcome(scanner, hostPort(lab.Host.Addr4, port), 500*time.Millisecond)
			}
			d.waitLine(line(`Blocked %s for 1h0m0s: port scan`, scanner.Addr4))
		})
	}
}

// Detaching hbf's program or deleting its pins from outside is noticed
// within a second or two, repaired, counted and logged; enforcement
// continues.
func TestUndoneFromOutsideIsRepaired(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "blocked"}})
	serveHTTP(t, lab.Host, 8080)
	host, client, blocked := lab.Host.Addr4, lab.Peers["client"], lab.Peers["blocked"]
	d := startDaemon(t, lab, "--limit", "7000/tcp=3/60s") // with the connection tracer's link
	d.mustCLI("block", blocked.Addr4.String())

	pinned := filepath.Join(d.pinPath, currentLayout, "links", netlab.Iface)
	l, err := link.LoadPinnedLink(pinned, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Detach(); err != nil { // what `bpftool link detach` does
		t.Fatal(err)
	}
	l.Close()
	eventually(t, "the detached program attached again", func() bool {
		return d.status().Counters["repairs_link"] == 1
	})
	if n := xdpPrograms(t, lab.Host); n != 1 {
		t.Errorf("%d XDP programs after the repair, want 1", n)
	}
	if got := dialOutcome(blocked, hostPort(host, 8080), time.Second); got != "filtered" {
		t.Errorf("the blocked peer after the repair: %s, want filtered", got)
	}
	if got := dialOutcome(client, hostPort(host, 8080), 2*time.Second); got != "open" {
		t.Errorf("the client after the repair: %s, want open", got)
	}

	if err := os.RemoveAll(filepath.Join(d.pinPath, currentLayout)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pins restored", func() bool {
		_, errMap := os.Stat(filepath.Join(d.pinPath, currentLayout, "maps", "blocks4"))
		_, errLink := os.Stat(pinned)
		_, errTracer := os.Stat(filepath.Join(d.pinPath, currentLayout, "tracer"))
		return errMap == nil && errLink == nil && errTracer == nil
	})
	s := scrape(t, d)
	if n := s.value(t, "hbf_repairs_total", "link"); n != 1 {
		t.Errorf("hbf_repairs_total{kind=link} %v, want 1", n)
	}
	if n := s.value(t, "hbf_repairs_total", "pin"); n != pinnedMapCount+2 {
		t.Errorf("hbf_repairs_total{kind=pin} %v, want %d (%d maps, the XDP link, the tracer's)", n, pinnedMapCount+2, pinnedMapCount)
	}
	if !strings.Contains(d.stderrText(), "pins were removed from outside; pinned again") {
		t.Errorf("the pin repair is not logged:\n%s", d.stderrText())
	}
	// A restart adopts the restored pins: the block is still there.
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
}

// The interface removed and re-created (a veth, a VM's NIC hot-plugged):
// hbf attaches to the new one, and enforces there.
func TestInterfaceRecreated(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"client", "blocked"}})
	serveHTTP(t, lab.Host, 8080)
	host, client, blocked := lab.Host, lab.Peers["client"], lab.Peers["blocked"]
	d := startDaemon(t, lab)
	d.mustCLI("block", blocked.Addr4.String())

	ip(t, host, "link", "del", netlab.Iface)
	eventually(t, "the loss noticed", func() bool {
		return strings.Contains(d.stderrText(), "the interface is gone")
	})
	// Put it back as netlab built it: the host is port p0 of the switch.
	ip(t, lab.Switch, "link", "add", "p0", "type", "veth", "peer", "name", netlab.Iface, "netns", host.Name)
	ip(t, lab.Switch, "link", "set", "p0", "master", "br0", "up")
	ip(t, host, "addr", "add", host.Addr4.String()+"/24", "dev", netlab.Iface)
	ip(t, host, "addr", "add", host.Addr6.String()+"/64", "dev", netlab.Iface, "nodad")
	ip(t, host, "link", "set", netlab.Iface, "up")
	eventually(t, "attached to the new interface", func() bool {
		return d.status().Counters["repairs_interface"] == 1
	})
	if got := dialOutcome(client, hostPort(host.Addr4, 8080), 3*time.Second); got != "open" {
		t.Errorf("the client on the new interface: %s, want open", got)
	}
	if got := dialOutcome(blocked, hostPort(host.Addr4, 8080), time.Second); got != "filtered" {
		t.Errorf("the blocked peer on the new interface: %s, want filtered", got)
	}
	if n := scrape(t, d).value(t, "hbf_repairs_total", "interface"); n != 1 {
		t.Errorf("hbf_repairs_total{kind=interface} %v, want 1", n)
	}
}

func netInterface(name string) (int, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifc.Index, nil
}
