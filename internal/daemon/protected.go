package daemon

import (
	"slices"

	"github.com/hbf-firewall/hbf/internal/hostnet"
	"github.com/hbf-firewall/hbf/internal/protect"
)

// protectedBase is what is never blocked besides the allowlist, under set
// with the host as host: loopback, the host's addresses, gateways and
// resolvers, the SSH client hbf was started from, and --allow.
func (d *daemon) protectedBase(set Settings, host hostnet.Snapshot) []protect.Entry {
	return slices.Concat(protect.Host(host, set.ResolvConf), protect.SSHClient(d.start.SSHConnection), protect.Flags(set.Allow))
}
