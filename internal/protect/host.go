package protect

import (
	"net/netip"
	"strings"

	"github.com/hbf-firewall/hbf/internal/hostnet"
)

// loopback is never blocked, whatever a scanner spoofs.
var loopback = []Entry{
	{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Kind: KindLoopback, Why: "loopback"},
	{Prefix: netip.MustParsePrefix("::1/128"), Kind: KindLoopback, Why: "loopback"},
}

// Host are the entries of the host itself: loopback, its addresses, its
// default gateways and its DNS resolvers (read from resolvConf).
func Host(host hostnet.Snapshot, resolvConf string) []Entry {
	out := append([]Entry(nil), loopback...)
	out = append(out, Addrs(host.Addrs, KindHost, "an address of this host")...)
	out = append(out, Addrs(host.Gateways, KindGateway, "a default gateway of this host")...)
	out = append(out, Addrs(host.Resolvers, KindResolver, "a DNS resolver of this host (in "+resolvConf+")")...)
	return out
}

// SSHClient is the entry of the SSH client hbf was started from, read
// from $SSH_CONNECTION ("client-ip client-port server-ip server-port"), so
// that starting hbf over SSH cannot lock the operator out.
func SSHClient(sshConnection string) []Entry {
	f := strings.Fields(sshConnection)
	if len(f) != 4 {
		return nil
	}
	ip, err := netip.ParseAddr(f[0])
	if err != nil {
		return nil
	}
	return single(ip, KindSSH, "the SSH client hbf was started from")
}

// Flags are the entries of --allow.
func Flags(allow []netip.Prefix) []Entry {
	out := make([]Entry, 0, len(allow))
	for _, p := range allow {
		out = append(out, Entry{Prefix: p, Kind: KindFlag, Why: "allowed by --allow"})
	}
	return out
}
