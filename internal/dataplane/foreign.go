package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ErrForeignXDP: another XDP program holds the interface.
var ErrForeignXDP = errors.New("another XDP program is attached")

// detachForeign removes whatever XDP program holds the interface: a bpf_link
// (BPF_LINK_DETACH; its owner keeps a defunct link), else a program attached
// through netlink, in either mode. It says what it removed.
//
// Links are listed system-wide and say only their ifindex, which repeats
// across network namespaces: a link is the interface's only if it also runs
// the program netlink reports on the interface in this namespace.
func detachForeign(ifindex int) (string, error) {
	progID, err := xdpProgramOn(ifindex)
	if err != nil {
		return "", err
	}
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil || info.Type != link.XDPType || info.XDP() == nil ||
			int(info.XDP().Ifindex) != ifindex || uint32(info.Program) != progID {
			continue
		}
		if err := it.Link.Detach(); err != nil {
			return "", fmt.Errorf("detach bpf_link %d: %w", it.ID, err)
		}
		return fmt.Sprintf("bpf_link %d (program %d)", it.ID, info.Program), nil
	}
	// Listing links needs CAP_SYS_ADMIN; without it only a program attached
	// through netlink can be replaced, and the attach after says so if the
	// interface is still held.
	if err := it.Err(); err != nil && !errors.Is(err, unix.EPERM) {
		return "", fmt.Errorf("list bpf links: %w", err)
	}
	for _, mode := range []uint32{unix.XDP_FLAGS_DRV_MODE, unix.XDP_FLAGS_SKB_MODE} {
		if err := netlinkDetachXDP(ifindex, mode); err != nil {
			return "", err
		}
	}
	return "a program attached through netlink", nil
}

// xdpProgramOn asks rtnetlink which XDP program runs on the interface of
// this network namespace; 0: none.
func xdpProgramOn(ifindex int) (uint32, error) {
	rib, err := syscall.NetlinkRIB(unix.RTM_GETLINK, unix.AF_UNSPEC)
	if err != nil {
		return 0, fmt.Errorf("dump links: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return 0, fmt.Errorf("parse links: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWLINK || len(m.Data) < unix.SizeofIfInfomsg ||
			int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))) != ifindex {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			return 0, fmt.Errorf("parse link attributes: %w", err)
		}
		for _, a := range attrs {
			if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_XDP {
				continue
			}
			for b := a.Value; len(b) >= unix.SizeofRtAttr; {
				l := int(binary.NativeEndian.Uint16(b[0:2]))
				if l < unix.SizeofRtAttr || l > len(b) {
					break
				}
				if binary.NativeEndian.Uint16(b[2:4]) == unix.IFLA_XDP_PROG_ID && l >= unix.SizeofRtAttr+4 {
					return binary.NativeEndian.Uint32(b[unix.SizeofRtAttr:]), nil
				}
				b = b[min((l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1), len(b)):]
			}
		}
		return 0, nil
	}
	return 0, fmt.Errorf("no interface with index %d", ifindex)
}

// netlinkDetachXDP sends RTM_SETLINK with IFLA_XDP { FD -1, FLAGS mode }:
// what `ip link set DEV xdp off` does. Without a program in that mode it is
// a no-op.
func netlinkDetachXDP(ifindex int, mode uint32) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open rtnetlink: %w", err)
	}
	defer unix.Close(fd)

	attr := func(typ uint16, payload []byte) []byte {
		b := make([]byte, unix.SizeofRtAttr, unix.SizeofRtAttr+len(payload))
		binary.NativeEndian.PutUint16(b[0:], uint16(unix.SizeofRtAttr+len(payload)))
		binary.NativeEndian.PutUint16(b[2:], typ)
		return append(b, payload...)
	}
	u32 := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	noFD := int32(-1)
	xdp := attr(unix.IFLA_XDP|unix.NLA_F_NESTED,
		append(attr(unix.IFLA_XDP_FD, u32(uint32(noFD))), attr(unix.IFLA_XDP_FLAGS, u32(mode))...))

	ifinfo := make([]byte, unix.SizeofIfInfomsg)
	ifinfo[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(ifinfo[4:], uint32(ifindex))
	body := append(ifinfo, xdp...)
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], unix.RTM_SETLINK)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	msg = append(msg, body...)

	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink XDP detach: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("netlink XDP detach: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return fmt.Errorf("netlink XDP detach: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return fmt.Errorf("netlink XDP detach: %w", unix.Errno(-code))
			}
		}
	}
	return nil
}

// Replaced lists the foreign programs Attach detached (Options.ReplaceForeign).
func (d *Dataplane) Replaced() []string { return d.replaced }
