package hostnet

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Changes tells when the host's links, addresses or routes change.
type Changes struct {
	f *os.File
	c chan struct{}
}

// Subscribe joins rtnetlink's link, address and route groups of the current
// network namespace.
func Subscribe() (*Changes, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	groups := uint32(unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR |
		unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("join rtnetlink groups: %w", err)
	}
	// Non-blocking and handed to the runtime's poller, so that Close ends a
	// pending read.
	ch := &Changes{f: os.NewFile(uintptr(fd), "rtnetlink"), c: make(chan struct{}, 1)}
	go ch.read()
	return ch, nil
}

// C receives after one or more changes; read a new Snapshot then. Changes
// come in bursts and are not queued one by one.
func (ch *Changes) C() <-chan struct{} { return ch.c }

// Close stops the notifications.
func (ch *Changes) Close() error { return ch.f.Close() }

func (ch *Changes) read() {
	buf := make([]byte, 64*1024)
	for {
		_, err := ch.f.Read(buf)
		// ENOBUFS: the kernel dropped notifications. Something changed all
		// the same, and a new snapshot reads it whole.
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			close(ch.c)
			return
		}
		select {
		case ch.c <- struct{}{}:
		default:
		}
	}
}
