package daemon

import (
	"net/netip"
	"strings"

	"github.com/hbf-firewall/hbf/internal/hostnet"
)

// neverBlock is what is never blocked whatever the operator configured or a
// scanner spoofs: loopback, the host's own addresses, its default gateways,
// its DNS resolvers, and the SSH client hbf was started from.
func neverBlock(host hostnet.Snapshot, resolvConf, sshConnection string) []fixedAllow {
	out := []fixedAllow{
		{prefix: netip.MustParsePrefix("127.0.0.0/8"), origin: "loopback", why: "loopback"},
		{prefix: netip.MustParsePrefix("::1/128"), origin: "loopback", why: "loopback"},
	}
	single := func(a netip.Addr, origin, why string) {
		a = a.Unmap().WithZone("")
		if a.IsLoopback() || a.IsUnspecified() {
			return
		}
		out = append(out, fixedAllow{prefix: netip.PrefixFrom(a, a.BitLen()), origin: origin, why: why})
	}
	for _, a := range host.Addrs {
		single(a, "host", "an address of this host")
	}
	for _, a := range host.Gateways {
		single(a, "gateway", "a default gateway of this host")
	}
	for _, a := range host.Resolvers {
		single(a, "resolver", "a DNS resolver of this host (in "+resolvConf+")")
	}
	// SSH_CONNECTION is "client-ip client-port server-ip server-port".
	if f := strings.Fields(sshConnection); len(f) == 4 {
		if ip, err := netip.ParseAddr(f[0]); err == nil {
			single(ip, "ssh", "the SSH client hbf was started from")
		}
	}
	return out
}
