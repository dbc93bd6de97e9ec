package hostnet

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Changes tells when the host's links, addresses or routes change.
type Changes struct {
	s *nl.NetlinkSocket
	c chan struct{}
}

// Subscribe joins rtnetlink's link, address and route groups of the current
// network namespace.
func Subscribe() (*Changes, error) {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR,
		unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("join rtnetlink groups: %w", err)
	}
	// The socket is non-blocking, in the runtime's poller: Close ends a
	// pending read.
	ch := &Changes{s: s, c: make(chan struct{}, 1)}
	go ch.read()
	return ch, nil
}

// C receives after one or more changes; read a new Snapshot then. Changes
// come in bursts and are not queued one by one.
func (ch *Changes) C() <-chan struct{} { return ch.c }

// Close stops the notifications.
func (ch *Changes) Close() error {
	ch.s.Close()
	return nil
}

func (ch *Changes) read() {
	for {
		_, _, err := ch.s.Receive()
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
