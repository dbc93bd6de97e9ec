package dataplane

import (
	"net"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// nsThread is an OS thread in a network namespace of its own: a program run
// from it (BPF_PROG_TEST_RUN) looks sockets up there, and sockets opened
// from it live there.
type nsThread struct {
	work chan func()
}

// newNetns starts a thread in a new network namespace, which goes with it
// at the test's end.
func newNetns(t testing.TB) *nsThread {
	t.Helper()
	n := &nsThread{work: make(chan func())}
	ready := make(chan error)
	go func() {
		// Never unlocked: the thread exits with the goroutine, and the
		// namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for f := range n.work {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { close(n.work) })
	return n
}

// do runs f on the thread.
func (n *nsThread) do(f func() error) error {
	errc := make(chan error)
	n.work <- func() { errc <- f() }
	return <-errc
}

// listenUDP binds a UDP socket in the namespace ("udp4", "udp6", or "udp"
// for a dual-stack one on "[::]:port").
func (n *nsThread) listenUDP(t testing.TB, network, addr string) {
	t.Helper()
	var c net.PacketConn
	if err := n.do(func() (err error) { c, err = net.ListenPacket(network, addr); return err }); err != nil {
		t.Fatalf("bind %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
}

// listenTCP opens a TCP listener in the namespace.
func (n *nsThread) listenTCP(t testing.TB, network, addr string) {
	t.Helper()
	var l net.Listener
	if err := n.do(func() (err error) { l, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { l.Close() })
}

// onCPU moves the goroutine to an OS thread of its own, on cpu, and
// returns what lets the thread go.
func onCPU(cpu int) func() {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	_ = unix.SchedSetaffinity(0, &set)
	return runtime.UnlockOSThread
}
