package protect

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
)

// Lookup resolves a name to its addresses, as net.Resolver's LookupNetIP
// with network "ip" does.
type Lookup func(ctx context.Context, host string) ([]netip.Addr, error)

// SystemLookup resolves names as the host does (its hosts file, its
// resolvers).
func SystemLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// Resolve turns hosts into addresses: an address stands for itself, a name
// is looked up. It returns every address found, sorted, and what could
// not be resolved.
func Resolve(ctx context.Context, lookup Lookup, hosts []string) ([]netip.Addr, []error) {
	var out []netip.Addr
	var errs []error
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			out = append(out, a.Unmap().WithZone(""))
			continue
		}
		addrs, err := lookup(ctx, h)
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve %s: %w", h, err))
			continue
		}
		for _, a := range addrs {
			out = append(out, a.Unmap().WithZone(""))
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), errs
}

// EndpointHosts are the hosts of etcd's endpoint URLs, addresses or names.
func EndpointHosts(endpoints []string) []string {
	var out []string
	for _, e := range endpoints {
		if u, err := url.Parse(e); err == nil && u.Hostname() != "" {
			out = append(out, u.Hostname())
		}
	}
	return out
}

// Etcd are the entries of etcd's endpoints, resolved: a host that blocked
// its own etcd on four forged SYNs would be cut off from its fleet.
func Etcd(addrs []netip.Addr) []Entry {
	return Addrs(addrs, KindEtcd, "an etcd endpoint of the fleet")
}
