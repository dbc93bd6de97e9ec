// Package hostnet reads where the host stands on the network (its addresses
// and their prefixes, its default gateways, its DNS resolvers) and tells when
// that changes, through rtnetlink notifications. hbf never blocks any of these:
// a spoofed scan "from" the gateway must not cut the host off.
package hostnet

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
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
	addrs, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return s, fmt.Errorf("list the host's addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := addrOf(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		s.Addrs = append(s.Addrs, ip)
		if p, err := ip.Prefix(ones); err == nil && ones < ip.BitLen() {
			s.Prefixes = append(s.Prefixes, p)
		}
	}
	if s.Gateways, err = defaultGateways(); err != nil {
		return s, err
	}
	s.Resolvers, err = ReadResolvers(resolvConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return s, err
	}
	s.normalize()
	return s, nil
}

func addrOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// dump runs a netlink dump again when the kernel says it changed while it
// was read: a partial answer could miss a gateway.
func dump[T any](list func() ([]T, error)) ([]T, error) {
	for range 3 {
		out, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return list()
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

// defaultGateways returns the next hops of the default unicast routes of
// every routing table, multipath included.
func defaultGateways() ([]netip.Addr, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Type: unix.RTN_UNICAST}
	routes, err := dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
	})
	if err != nil {
		return nil, fmt.Errorf("dump routes: %w", err)
	}
	var out []netip.Addr
	for _, r := range defaultRoutes(routes) {
		if gw, ok := addrOf(r.Gw); ok {
			out = append(out, gw)
		}
		for _, nh := range r.MultiPath {
			if gw, ok := addrOf(nh.Gw); ok {
				out = append(out, gw)
			}
		}
	}
	return out, nil
}

func defaultRoutes(routes []netlink.Route) []netlink.Route {
	var out []netlink.Route
	for _, r := range routes {
		if r.Dst == nil {
			out = append(out, r)
		} else if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			out = append(out, r)
		}
	}
	return out
}

// ErrNoDefaultRoute: the host has no default route to take an interface from.
var ErrNoDefaultRoute = errors.New("no default route")

// DefaultRouteInterface names the interface of the main table's IPv4
// default route, else of its IPv6 one.
func DefaultRouteInterface() (string, error) {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(family, &netlink.Route{Type: unix.RTN_UNICAST}, netlink.RT_FILTER_TYPE)
		})
		if err != nil {
			return "", fmt.Errorf("dump routes: %w", err)
		}
		for _, r := range defaultRoutes(routes) {
			index := r.LinkIndex
			if index == 0 && len(r.MultiPath) > 0 {
				index = r.MultiPath[0].LinkIndex
			}
			if l, err := netlink.LinkByIndex(index); err == nil {
				return l.Attrs().Name, nil
			}
		}
	}
	return "", ErrNoDefaultRoute
}

// EphemeralPortsFile is where Linux keeps the range of local ports it
// picks for the host's own outgoing connections and queries, IPv4 and
// IPv6 alike.
const EphemeralPortsFile = "/proc/sys/net/ipv4/ip_local_port_range"

// EphemeralPorts reads the host's ephemeral port range from path
// (EphemeralPortsFile, in the namespace whose /proc is mounted).
func EphemeralPorts(path string) ([2]uint16, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [2]uint16{}, fmt.Errorf("read the ephemeral port range: %w", err)
	}
	var lo, hi uint16
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo > hi {
		return [2]uint16{}, fmt.Errorf("%s: %q is not a port range (\"32768 60999\")", path, strings.TrimSpace(string(b)))
	}
	return [2]uint16{lo, hi}, nil
}
