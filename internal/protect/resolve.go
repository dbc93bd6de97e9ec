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

// Resolved are the addresses of hosts, by host.
type Resolved map[string][]netip.Addr

// Addrs are every address, sorted, once.
func (r Resolved) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, addrs := range r {
		out = append(out, addrs...)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// Resolve turns hosts into addresses: an address stands for itself, a name
// is looked up. A name that does not resolve keeps what it had in prev
// (nil: nothing), and is said in the errors: a resolver that fails for a
// while must not unprotect what it named, nor keep another name's old
// addresses.
func Resolve(ctx context.Context, lookup Lookup, hosts []string, prev Resolved) (Resolved, []error) {
	out := Resolved{}
	var errs []error
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			out[h] = []netip.Addr{a.Unmap().WithZone("")}
			continue
		}
		addrs, err := lookup(ctx, h)
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve %s: %w", h, err))
			if old, ok := prev[h]; ok {
				out[h] = old
			}
			continue
		}
		for _, a := range addrs {
			out[h] = append(out[h], a.Unmap().WithZone(""))
		}
	}
	return out, errs
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

// LAPI are the entries of the CrowdSec Local API's address, resolved: a
// decision, or a forged scan, must not cut the host off from its source of
// decisions.
func LAPI(addrs []netip.Addr) []Entry {
	return Addrs(addrs, KindLAPI, "the CrowdSec Local API")
}

// Etcd are the entries of etcd's endpoints, resolved: a host that blocked
// its own etcd on four forged SYNs would be cut off from its fleet.
func Etcd(addrs []netip.Addr) []Entry {
	return Addrs(addrs, KindEtcd, "an etcd endpoint of the fleet")
}
