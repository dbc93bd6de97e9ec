// Package hostnet reads where the host stands on the network (its addresses
// and their prefixes, its default gateways, its DNS resolvers) and tells when
// that changes, through rtnetlink notifications. hbf never blocks any of these:
// a spoofed scan "from" the gateway must not cut the host off.
package hostnet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Snapshot is the host's view of the network at one moment. Every list is
// sorted and without duplicates, so snapshots compare with Equal.
type Snapshot struct {
	Addrs     []netip.Addr   // every address of every interface, loopback included
	Prefixes  []netip.Prefix // the prefixes of those addresses: what is on-link
	Gateways  []netip.Addr   // next hops of default routes, every table
	Resolvers []netip.Addr   // nameservers of the resolver configuration
}

// Equal reports whether two snapshots hold the same.
func (s Snapshot) Equal(o Snapshot) bool {
	return slices.Equal(s.Addrs, o.Addrs) && slices.Equal(s.Prefixes, o.Prefixes) &&
		slices.Equal(s.Gateways, o.Gateways) && slices.Equal(s.Resolvers, o.Resolvers)
}

// Read takes a snapshot; resolvConf is the resolver configuration's path. A
// missing resolver configuration means no resolvers, not an error.
func Read(resolvConf string) (Snapshot, error) {
	var s Snapshot
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return s, fmt.Errorf("list the host's addresses: %w", err)
	}
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipnet.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		ones, _ := ipnet.Mask.Size()
		s.Addrs = append(s.Addrs, ip)
		if p, err := ip.Prefix(ones); err == nil && ones < ip.BitLen() {
			s.Prefixes = append(s.Prefixes, p)
		}
	}
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		gws, err := defaultGateways(family)
		if err != nil {
			return s, err
		}
		s.Gateways = append(s.Gateways, gws...)
	}
	s.Resolvers, err = ReadResolvers(resolvConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return s, err
	}
	s.normalize()
	return s, nil
}

func (s *Snapshot) normalize() {
	sortAddrs := func(a []netip.Addr) []netip.Addr {
		slices.SortFunc(a, netip.Addr.Compare)
		return slices.Compact(a)
	}
	s.Addrs = sortAddrs(s.Addrs)
	s.Gateways = sortAddrs(s.Gateways)
	s.Resolvers = sortAddrs(s.Resolvers)
	slices.SortFunc(s.Prefixes, netip.Prefix.Compare)
	s.Prefixes = slices.Compact(s.Prefixes)
}

// ReadResolvers returns the nameserver addresses of a resolv.conf file.
// Lines it cannot read are skipped: the resolver library skips them too.
func ReadResolvers(path string) ([]netip.Addr, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(fields[1]); err == nil {
			out = append(out, a.WithZone("").Unmap())
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// defaultGateways dumps the family's routes and returns the next hops of the
// default ones, multipath included.
func defaultGateways(family int) ([]netip.Addr, error) {
	rib, err := syscall.NetlinkRIB(unix.RTM_GETROUTE, family)
	if err != nil {
		return nil, fmt.Errorf("dump routes: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return nil, fmt.Errorf("parse routes: %w", err)
	}
	var out []netip.Addr
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWROUTE || len(m.Data) < unix.SizeofRtMsg {
			continue
		}
		// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type.
		if dstLen, typ := m.Data[1], m.Data[7]; dstLen != 0 || typ != unix.RTN_UNICAST {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			return nil, fmt.Errorf("parse route attributes: %w", err)
		}
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.RTA_GATEWAY:
				if ip, ok := netip.AddrFromSlice(a.Value); ok {
					out = append(out, ip.Unmap())
				}
			case unix.RTA_MULTIPATH:
				out = append(out, nexthopGateways(a.Value)...)
			}
		}
	}
	return out, nil
}

// nexthopGateways reads the gateways of an RTA_MULTIPATH value: struct
// rtnexthop records, each followed by its own attributes.
func nexthopGateways(b []byte) []netip.Addr {
	var out []netip.Addr
	for len(b) >= unix.SizeofRtNexthop {
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		if n < unix.SizeofRtNexthop || n > len(b) {
			break
		}
		attrs := b[unix.SizeofRtNexthop:n]
		for len(attrs) >= unix.SizeofRtAttr {
			l := int(binary.NativeEndian.Uint16(attrs[0:2]))
			typ := binary.NativeEndian.Uint16(attrs[2:4])
			if l < unix.SizeofRtAttr || l > len(attrs) {
				break
			}
			if typ == unix.RTA_GATEWAY {
				if ip, ok := netip.AddrFromSlice(attrs[unix.SizeofRtAttr:l]); ok {
					out = append(out, ip.Unmap())
				}
			}
			attrs = attrs[min(rtaAlign(l), len(attrs)):]
		}
		b = b[min(rtaAlign(n), len(b)):]
	}
	return out
}

func rtaAlign(n int) int { return (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }
