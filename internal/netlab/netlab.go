// Package netlab builds throw-away network-namespace labs: a "host" that hbf
// protects and peers (a client, a scanner, ...) on one Ethernet segment, all
// in namespaces of their own. Tests, benchmarks and `hbf demo` use it; no
// packet leaves the lab.
//
//	peer ns (eth0) ── veth ──┐
//	peer ns (eth0) ── veth ──┼── bridge (switch ns)
//	host ns (eth0) ── veth ──┘
package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Options shape a lab.
type Options struct {
	// Peers are the names of the namespaces beside the host, e.g. "client",
	// "scanner". Each gets the next address.
	Peers []string
	// Queues gives the host's interface that many receive queues, so XDP
	// runs on several CPUs at once. 0 or 1: single queue.
	Queues int
	// TaggedFrames makes the switch hand VLAN-tagged frames on with their
	// tags inside the frame, as sent. By default the bridge moves the outer
	// tag into packet metadata (as a NIC's VLAN offload does) and XDP never
	// sees it. Needs ethtool.
	TaggedFrames bool
	// Direct joins a single peer to the host by one veth pair, with no
	// switch between them: for measurements of the host's receive path
	// that the bridge's own forwarding would blur.
	Direct bool
}

// Lab is a running lab; Close removes it.
type Lab struct {
	Prefix string
	Switch *NS
	Host   *NS
	Peers  map[string]*NS
	all    []*NS
}

// Iface is the name of every host's and peer's interface in a lab.
const Iface = "eth0"

// The lab's segment uses documentation prefixes only.
var (
	Net4 = netip.MustParsePrefix("192.0.2.0/24")
	Net6 = netip.MustParsePrefix("2001:db8::/64")
)

// addrs gives the n-th machine of the segment (the host is 1).
func addrs(n int) (netip.Addr, netip.Addr) {
	a4 := Net4.Addr().As4()
	a4[3] = byte(n)
	a6 := Net6.Addr().As16()
	a6[15] = byte(n)
	return netip.AddrFrom4(a4), netip.AddrFrom16(a6)
}

// New builds a lab. Namespace names start with a random prefix, so labs can
// run side by side.
func New(ctx context.Context, opts Options) (*Lab, error) {
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	l := &Lab{Prefix: "hbf" + hex.EncodeToString(rnd[:]), Peers: map[string]*NS{}}
	if err := l.build(ctx, opts); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Lab) newNS(ctx context.Context, role string) (*NS, error) {
	ns := &NS{Name: l.Prefix + "-" + role, Role: role}
	if err := ip(ctx, "netns", "add", ns.Name); err != nil {
		return nil, err
	}
	l.all = append(l.all, ns)
	if err := ip(ctx, "-n", ns.Name, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return ns, nil
}

func (l *Lab) build(ctx context.Context, opts Options) error {
	if opts.Direct {
		return l.buildDirect(ctx, opts)
	}
	var err error
	if l.Switch, err = l.newNS(ctx, "switch"); err != nil {
		return err
	}
	if err := ip(ctx, "-n", l.Switch.Name, "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if err := ip(ctx, "-n", l.Switch.Name, "link", "set", "br0", "up"); err != nil {
		return err
	}
	roles := append([]string{"host"}, opts.Peers...)
	for i, role := range roles {
		if strings.ContainsAny(role, "/ .") || role == "switch" || (i > 0 && role == "host") {
			return fmt.Errorf("peer name %q: must be a plain word other than host and switch", role)
		}
		ns, err := l.newNS(ctx, role)
		if err != nil {
			return err
		}
		queues := []string{}
		if role == "host" && opts.Queues > 1 {
			q := strconv.Itoa(opts.Queues)
			queues = []string{"numtxqueues", q, "numrxqueues", q}
		}
		port := "p" + strconv.Itoa(i)
		args := append([]string{"-n", l.Switch.Name, "link", "add", port}, queues...)
		args = append(args, "type", "veth", "peer", "name", Iface, "netns", ns.Name)
		args = append(args, queues...)
		if err := ip(ctx, args...); err != nil {
			return err
		}
		if err := ip(ctx, "-n", l.Switch.Name, "link", "set", port, "master", "br0", "up"); err != nil {
			return err
		}
		if err := addressUp(ctx, ns, i+1); err != nil {
			return err
		}
		if opts.TaggedFrames {
			cmd := l.Switch.Command(ctx, "ethtool", "-K", port, "txvlan", "off", "tx-vlan-stag-hw-insert", "off")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("ethtool -K %s: %w: %s", port, err, out)
			}
		}
		if role == "host" {
			l.Host = ns
		} else {
			l.Peers[role] = ns
		}
	}
	return nil
}

// buildDirect builds a host and one peer on the two ends of a veth pair.
func (l *Lab) buildDirect(ctx context.Context, opts Options) error {
	if len(opts.Peers) != 1 || opts.Queues > 1 || opts.TaggedFrames {
		return fmt.Errorf("a direct lab has exactly one peer, one queue and no switch to untag frames: got peers %q", opts.Peers)
	}
	var err error
	if l.Host, err = l.newNS(ctx, "host"); err != nil {
		return err
	}
	peer, err := l.newNS(ctx, opts.Peers[0])
	if err != nil {
		return err
	}
	l.Peers[peer.Role] = peer
	if err := ip(ctx, "-n", l.Host.Name, "link", "add", Iface, "type", "veth", "peer", "name", Iface, "netns", peer.Name); err != nil {
		return err
	}
	for i, ns := range []*NS{l.Host, peer} {
		if err := addressUp(ctx, ns, i+1); err != nil {
			return err
		}
	}
	return nil
}

// addressUp gives ns's interface the n-th machine's addresses and brings
// it up.
func addressUp(ctx context.Context, ns *NS, n int) error {
	ns.Addr4, ns.Addr6 = addrs(n)
	steps := [][]string{
		{"-n", ns.Name, "addr", "add", netip.PrefixFrom(ns.Addr4, Net4.Bits()).String(), "dev", Iface},
		{"-n", ns.Name, "addr", "add", netip.PrefixFrom(ns.Addr6, Net6.Bits()).String(), "dev", Iface, "nodad"},
		{"-n", ns.Name, "link", "set", Iface, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// Close kills what still runs in the lab's namespaces and removes them.
func (l *Lab) Close() error {
	var errs []error
	for _, ns := range l.all {
		out, _ := exec.Command("ip", "netns", "pids", ns.Name).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if err := ip(context.Background(), "netns", "del", ns.Name); err != nil {
			errs = append(errs, err)
		}
	}
	l.all = nil
	return errors.Join(errs...)
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NS is one network namespace of a lab.
type NS struct {
	Name  string // as `ip netns` knows it
	Role  string
	Addr4 netip.Addr
	Addr6 netip.Addr
}

// Path is the namespace's bind mount.
func (ns *NS) Path() string { return "/run/netns/" + ns.Name }

// Command runs a program in the namespace. Only the network namespace
// changes: the program sees the host's mounts, /sys/fs/bpf included.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.Path(), "--", name}, args...)...)
	cmd.Env = os.Environ()
	return cmd
}

// Run runs a program in the namespace and returns its combined output.
func (ns *NS) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := ns.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns.Role, err, out)
	}
	return string(out), nil
}
