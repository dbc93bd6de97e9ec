package daemon

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/hbf-firewall/hbf/internal/hostnet"
	"github.com/hbf-firewall/hbf/internal/protect"
)

const (
	// namesRecheck is how often the time daemon's servers and etcd's
	// endpoints are resolved again: a pool's and a DNS name's addresses
	// change without a word.
	namesRecheck = time.Minute
	// nameTimeout bounds the lookups of one resolution: at a start, it is
	// all they may delay protection by.
	nameTimeout = 3 * time.Second
)

// guarded is what the daemon protects besides the host and its settings,
// as it last found it.
type guarded struct {
	cloud   string           // the cloud the host runs in, or ""
	ntp     protect.Resolved // the time daemon's servers
	etcd    protect.Resolved // the fleet's etcd endpoints
	lapi    protect.Resolved // the CrowdSec Local API
	members []protect.Entry  // the addresses of the fleet's members this host protects
}

// protectedBase is what is never blocked besides the allowlist, under set
// with the host as host: loopback, the host's addresses, gateways and
// resolvers, the SSH client hbf was started from, --allow, the time
// daemon's servers, the cloud's metadata service, in a fleet etcd and
// the members, and CrowdSec's LAPI.
func (d *daemon) protectedBase(set Settings, host hostnet.Snapshot) []protect.Entry {
	d.mu.Lock()
	g := d.guard
	d.mu.Unlock()
	return slices.Concat(protect.Host(host, set.ResolvConf), protect.SSHClient(d.start.SSHConnection),
		protect.Flags(set.Allow), protect.Etcd(g.etcd.Addrs()), protect.LAPI(g.lapi.Addrs()), protect.NTP(g.ntp.Addrs()),
		protect.Metadata(g.cloud), g.members)
}

// applyProtected brings what the engine protects, and the kernel's
// allowlist, in step with what the daemon found. Callers hold reloadMu, as
// a reload computes the same from the same.
func (d *daemon) applyProtected() error {
	set := d.settings()
	return d.state.SetPolicy(set.Rules, d.protectedBase(set, d.hostSnapshot()))
}

// protectedCounts are hbf_protected_entries and hbf_protected_unenforced.
func (d *daemon) protectedCounts() (entries, unenforced map[string]int) {
	e, u := d.state.Protected()
	entries, unenforced = map[string]int{}, map[string]int{}
	for k, n := range e {
		entries[k.String()] = n
	}
	for k, n := range u {
		unenforced[k.String()] = n
	}
	return entries, unenforced
}

func (d *daemon) root() fs.FS {
	if d.deps.Root != nil {
		return d.deps.Root
	}
	return os.DirFS("/")
}

func (d *daemon) lookup() protect.Lookup {
	if d.deps.Lookup != nil {
		return d.deps.Lookup
	}
	return protect.SystemLookup
}

// findProtected finds, at start, what is protected besides the host and
// its settings: the cloud the host runs in, the time daemon's servers,
// etcd's endpoints, and the fleet's members as last seen, so that they are
// protected from the first packet, etcd answering or not. It runs while the
// program loads: the lookups wait on the network, not on the CPU.
func (d *daemon) findProtected() error {
	g := guarded{cloud: protect.Cloud(d.root())}
	g.ntp, g.etcd, g.lapi = d.resolveNames(guarded{})
	if f := d.start.Fleet; f.Enabled() {
		members, err := d.st.Members()
		if err != nil {
			return fmt.Errorf("read the store: %w", err)
		}
		g.members, _ = protect.Members(members, f.MemberPrefixes)
	}
	if g.cloud != "" {
		d.log.Info("running in a cloud: its metadata service is never blocked", "cloud", g.cloud)
	}
	d.mu.Lock()
	d.guard = g
	d.mu.Unlock()
	return nil
}

// resolveNames reads the time daemon's servers and resolves them, the
// fleet's etcd endpoints and CrowdSec's LAPI, within nameTimeout. A name
// that does not resolve keeps the addresses it had in prev, and is said
// once per problem.
func (d *daemon) resolveNames(prev guarded) (ntp, etcd, lapi protect.Resolved) {
	ctx, cancel := context.WithTimeout(context.Background(), nameTimeout)
	defer cancel()
	ntp, ntpErrs := protect.Resolve(ctx, d.lookup(), protect.Hosts(protect.TimeServers(d.root())), prev.ntp)
	etcd, etcdErrs := protect.Resolve(ctx, d.lookup(), protect.EndpointHosts(d.start.Fleet.Etcd), prev.etcd)
	var lapiHosts []string
	if d.start.CrowdSec.Enabled() {
		lapiHosts = protect.EndpointHosts([]string{d.start.CrowdSec.LAPI})
	}
	lapi, lapiErrs := protect.Resolve(ctx, d.lookup(), lapiHosts, prev.lapi)
	msg := ""
	for _, err := range slices.Concat(ntpErrs, etcdErrs, lapiErrs) {
		msg += err.Error() + "; "
	}
	if msg != d.namesErr { // once per problem, not every minute
		d.namesErr = msg
		if msg != "" {
			d.log.Warn("cannot resolve every NTP server, etcd endpoint and LAPI; the addresses last resolved stay protected",
				"err", msg)
		}
	}
	return ntp, etcd, lapi
}

// followNames resolves the time daemon's servers and etcd's endpoints again
// every namesRecheck, and protects what they resolve to now.
func (d *daemon) followNames(ctx context.Context) {
	follow(ctx, namesRecheck, nil, nil, d.refreshNames)
}

func (d *daemon) refreshNames() {
	d.mu.Lock()
	prev := d.guard
	d.mu.Unlock()
	ntp, etcd, lapi := d.resolveNames(prev)
	if slices.Equal(ntp.Addrs(), prev.ntp.Addrs()) && slices.Equal(etcd.Addrs(), prev.etcd.Addrs()) &&
		slices.Equal(lapi.Addrs(), prev.lapi.Addrs()) {
		return
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.mu.Lock()
	d.guard.ntp, d.guard.etcd, d.guard.lapi = ntp, etcd, lapi
	d.mu.Unlock()
	if err := d.applyProtected(); err != nil {
		d.log.Error("cannot update the never-block list in the kernel", "err", err)
	}
	d.log.Info("the NTP servers, etcd endpoints or LAPI resolve to other addresses; the never-block list follows",
		"ntp", diff(prev.ntp.Addrs(), ntp.Addrs()), "etcd", diff(prev.etcd.Addrs(), etcd.Addrs()),
		"lapi", diff(prev.lapi.Addrs(), lapi.Addrs()))
}
