package daemon

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
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

// DefaultRouteInterface names the interface of the IPv4 default route, else
// of the IPv6 one.
func DefaultRouteInterface() (string, error) {
	return defaultRouteInterface("/proc/net/route", "/proc/net/ipv6_route")
}

func defaultRouteInterface(v4Routes, v6Routes string) (string, error) {
	if name, err := scanRoutes(v4Routes, func(f []string) bool {
		return len(f) > 2 && f[1] == "00000000" && f[0] != "Iface"
	}, 0); err == nil && name != "" {
		return name, nil
	}
	name, err := scanRoutes(v6Routes, func(f []string) bool {
		return len(f) == 10 && f[0] == strings.Repeat("0", 32) && f[1] == "00" && f[9] != "lo"
	}, 9)
	if err != nil || name == "" {
		return "", fmt.Errorf("no default route to take the interface from: name it with --iface")
	}
	return name, nil
}

func scanRoutes(path string, isDefault func([]string) bool, ifaceField int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if isDefault(fields) {
			return fields[ifaceField], nil
		}
	}
	return "", sc.Err()
}
