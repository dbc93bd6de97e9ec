package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Do runs f with the calling goroutine's thread in the namespace. Sockets f
// opens stay in the namespace after Do returns; use them from anywhere.
func (ns *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// A thread whose namespace could not be restored must never run
		// other goroutines: exiting locked makes the runtime kill it.
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns.Name, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave netns %s: %w", ns.Name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen opens a listener in the namespace.
func (ns *NS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// DialContext connects from the namespace.
func (ns *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return ns.dial(ctx, &net.Dialer{}, network, addr)
}

func (ns *NS) dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient is an HTTP client whose connections start in the namespace.
func (ns *NS) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:       ns.DialContext,
		DisableKeepAlives: true,
	}}
}

// Probe tries a TCP connection from the namespace and says what a scanner
// learns from it: "open", "closed" (refused) or "filtered" (no answer
// before the timeout).
func (ns *NS) Probe(ctx context.Context, addr netip.AddrPort, timeout time.Duration) string {
	return ns.ProbeFrom(ctx, netip.Addr{}, addr, timeout)
}

// ProbeFrom is Probe from the namespace's address src (any when invalid).
func (ns *NS) ProbeFrom(ctx context.Context, src netip.Addr, addr netip.AddrPort, timeout time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := &net.Dialer{}
	if src.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	c, err := ns.dial(ctx, d, "tcp", addr.String())
	switch {
	case err == nil:
		c.Close()
		return "open"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "closed"
	default:
		return "filtered"
	}
}
