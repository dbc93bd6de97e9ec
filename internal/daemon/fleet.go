package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/decision"
	"github.com/hbf-firewall/hbf/internal/fleet"
	"github.com/hbf-firewall/hbf/internal/metrics"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/protect"
	"github.com/hbf-firewall/hbf/internal/report"
)

// fleetRecheck is how often the fleet's view is looked at again without a
// change: blocks expire and budgets refill without a word from etcd.
const fleetRecheck = time.Second

// fleetLink is this host in a fleet: the node that talks to etcd, the
// receiver that decides what of the others' applies here, and what it
// publishes of its own.
type fleetLink struct {
	d     *daemon
	cfg   Fleet
	node  *fleet.Node
	admin *fleet.Admin // nil without the admin credential
	recv  *fleet.Receiver
	// endpoints are etcd's addresses: never blocked, or the fleet could
	// cut itself off.
	endpoints []netip.Addr
	decided   chan struct{} // this host's decisions changed: publish

	skewed map[string]bool // members whose clock skew was logged

	mu       sync.Mutex
	rejected map[string]uint64 // by the receiver, by reason
	pending  int
	applied  int
}

// openFleet readies the fleet, when there is one; it talks to etcd only
// once serve runs, so that an etcd out of reach delays nothing.
func (d *daemon) openFleet() error {
	f := d.start.Fleet
	if !f.Enabled() {
		return nil
	}
	layout, _ := fleet.NewLayout(f.Prefix) // Validate checked it
	tlsCfg, err := fleetTLS(f.Etcd, f.CA, f.Cert, f.Key)
	if err != nil {
		return fmt.Errorf("--fleet-ca/--fleet-cert/--fleet-key: %w", err)
	}
	password, err := readSecret(f.PasswordFile, "--fleet-password-file")
	if err != nil {
		return err
	}
	fl := &fleetLink{d: d, cfg: f, decided: make(chan struct{}, 1), rejected: map[string]uint64{}, skewed: map[string]bool{},
		recv:      fleet.NewReceiver(f.Node, fleet.Limits{MinReporters: f.MinReporters, PerMinute: f.AcceptPerMinute, Quota: f.Quota}),
		endpoints: endpointAddrs(f.Etcd)}
	fl.node, err = fleet.NewNode(fleet.Config{Endpoints: f.Etcd, Layout: layout, Node: f.Node, TLS: tlsCfg,
		Username: f.User, Password: password, Member: fl.member, Log: d.log.With("fleet", f.Node)})
	if err != nil {
		return fmt.Errorf("--node-name %w", err)
	}
	if f.Admin() {
		adminTLS, err := fleetTLS(f.Etcd, f.CA, f.AdminCert, f.AdminKey)
		if err != nil {
			return fmt.Errorf("--fleet-admin-cert/--fleet-admin-key: %w", err)
		}
		adminPassword, err := readSecret(f.AdminPasswordFile, "--fleet-admin-password-file")
		if err != nil {
			return err
		}
		fl.admin = fleet.NewAdmin(fleet.AdminConfig{Endpoints: f.Etcd, Layout: layout, TLS: adminTLS,
			Username: f.AdminUser, Password: adminPassword})
	}
	// What this host applied before it stopped is known: it is not new,
	// and spends no budget again.
	for origin, prefixes := range d.state.FleetApplied() {
		for p, created := range prefixes {
			fl.recv.Known(origin, p, created)
		}
	}
	d.state.OnChange(func() { signalNow(fl.decided) })
	d.fleet = fl
	return nil
}

func signalNow(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// fleetTLS is the TLS of a connection to etcd: its CA, a client
// certificate; nil over plain HTTP without either.
func fleetTLS(endpoints []string, ca, cert, key string) (*tls.Config, error) {
	secure := ca != "" || cert != ""
	for _, e := range endpoints {
		secure = secure || strings.HasPrefix(e, "https://")
	}
	if !secure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", ca)
		}
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

func readSecret(path, flag string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// endpointAddrs are the addresses of etcd's endpoints, names resolved.
func endpointAddrs(endpoints []string) []netip.Addr {
	var out []netip.Addr
	for _, e := range endpoints {
		u, err := url.Parse(e)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			out = append(out, a.Unmap())
			continue
		}
		names, _ := net.LookupHost(u.Hostname())
		for _, n := range names {
			if a, err := netip.ParseAddr(n); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// member is what this host says of itself in the fleet.
func (fl *fleetLink) member() fleet.Member {
	return fleet.Member{HBF: fl.d.deps.Version, Interfaces: fl.d.start.Ifaces, Addrs: fl.d.hostSnapshot().Addrs}
}

// run works with the fleet until ctx ends.
func (fl *fleetLink) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { fl.node.Run(ctx) })
	wg.Go(func() { fl.publish(ctx) })
	wg.Go(func() { fl.receive(ctx) })
	wg.Wait()
}

// publish keeps what this host publishes its shareable decisions.
func (fl *fleetLink) publish(ctx context.Context) {
	for {
		fl.node.SetOwn(fl.d.state.Shareable(fl.cfg.ShareScans, fl.cfg.ShareManual))
		select {
		case <-ctx.Done():
			return
		case <-fl.decided:
		}
	}
}

// receive applies the fleet here each time it changes, and every second.
func (fl *fleetLink) receive(ctx context.Context) {
	tick := time.NewTicker(fleetRecheck)
	defer tick.Stop()
	for {
		fl.apply()
		select {
		case <-ctx.Done():
			return
		case <-fl.node.Changed():
		case <-tick.C:
		}
	}
}

// apply brings this host's fleet decisions in step with the view: the
// fleet's allowlist first (it protects), its unblocks, then the blocks
// the receiver accepts.
func (fl *fleetLink) apply() {
	d, s := fl.d, fl.d.state
	v := fl.node.View()
	if v.Revision == 0 {
		// Not read yet (etcd away since the start): what this host applied
		// before stays, as the kernel and the store hold it.
		return
	}
	now := s.Now()
	allows := map[netip.Prefix]fleet.Allow{}
	for p, a := range v.Allows {
		if !a.Expired(now) {
			allows[p] = a
		}
	}
	if err := s.SetFleetAllows(allows); err != nil {
		d.log.Error("the fleet's allowlist could not be applied whole", "err", err)
	}
	s.EndByFleet(v.Unblocks)
	dec := fl.recv.Decide(v, fl.check(v), now)
	added, removed, err := s.SetFleet(dec.Apply)
	if err != nil {
		d.log.Error("the fleet's blocks could not all be applied here", "err", err)
	}
	for _, a := range dec.New {
		if d.metrics != nil {
			d.metrics.ObserveFleetDelay(now.Sub(a.Block.Created))
		}
		b := a.Block
		ev := &report.Block{Time: now, Prefix: b.Prefix, Reason: b.Reason + " (fleet: " + a.Origin + ")", Expires: b.ExpiresAt}
		if !b.ExpiresAt.IsZero() {
			ev.Duration = b.ExpiresAt.Sub(now).Round(time.Second)
		}
		d.publish(ev)
	}
	fl.mu.Lock()
	for reason, n := range dec.Refused {
		fl.rejected[reason] += uint64(n)
	}
	fl.pending, fl.applied = dec.Pending, len(dec.Apply)
	fl.mu.Unlock()
	fl.warnSkew(v.Members)
	if added+removed > 0 {
		d.log.Info("the fleet's blocks applied here", "added", added, "removed", removed, "revision", v.Revision)
	}
}

// maxSkew is the clock skew past which a member is warned of: expiries
// and delays are absolute times, which assume the clocks agree.
const maxSkew = 3 * time.Second

// warnSkew logs, once while it lasts, a member whose clock is off.
func (fl *fleetLink) warnSkew(members map[string]fleet.Member) {
	for name, m := range members {
		off := m.Skew().Abs() > maxSkew
		if off && !fl.skewed[name] {
			fl.d.log.Warn("a fleet member's clock is off: expiries and delays assume synchronised clocks (NTP)",
				"member", name, "skew", m.Skew().Round(100*time.Millisecond))
		}
		fl.skewed[name] = off
	}
}

// check is this host's policy for the fleet's blocks: its own rules and
// never-block list, and never a member of the fleet or etcd.
func (fl *fleetLink) check(v fleet.View) func(netip.Prefix) error {
	d := fl.d
	set := d.settings()
	members := map[string][]netip.Addr{}
	for node, m := range v.Members {
		members[node] = m.Addrs
	}
	memberEntries, _ := protect.Members(members, nil)
	base := slices.Concat(d.protectedBase(set, d.hostSnapshot()), memberEntries, protect.Etcd(fl.endpoints))
	return d.state.Checker(set.Rules, base)
}

// expiresAfter is when a decision made at now for d ends (0: never).
func expiresAfter(now time.Time, d time.Duration) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return now.Add(d)
}

// fleetStats are the hbf_fleet_ metrics.
func (d *daemon) fleetStats() metrics.FleetStats {
	fl := d.fleet
	if fl == nil {
		return metrics.FleetStats{}
	}
	counts := fl.node.Counts()
	rejected, errs := map[string]uint64{}, map[string]uint64{}
	for _, r := range fleet.RejectReasons {
		rejected[r] = counts.Rejected[r]
	}
	for _, op := range fleet.Ops {
		errs[op] = counts.Errors[op]
	}
	fl.mu.Lock()
	for reason, n := range fl.rejected {
		rejected[reason] += n
	}
	applied := fl.applied
	fl.mu.Unlock()
	return metrics.FleetStats{Connected: fl.node.Status().Connected, Members: len(fl.node.View().Members),
		Entries: applied, Published: counts.Published, Rejected: rejected, Errors: errs}
}

// errNoAdmin refuses a fleet-wide change on a node without the credential.
var errNoAdmin = errors.New("this node holds no fleet admin credential (--fleet-admin-cert and --fleet-admin-key, " +
	"or --fleet-admin-user): issue it on a node that has one")

// canShare says why this host cannot publish a manual block, if it cannot.
func (d *daemon) canShare() error {
	switch {
	case d.fleet == nil:
		return api.ErrNoFleet
	case !d.start.Fleet.ShareManual:
		return errors.New("--fleet-share says this host publishes no manual blocks: block without --fleet")
	}
	return nil
}

// refuseAll answers every target of req with err, and audits it.
func (d *daemon) refuseAll(c api.Caller, action string, req api.ChangeRequest, err error) []api.Result {
	out := make([]api.Result, 0, len(req.Targets))
	for _, t := range req.Targets {
		r := api.Result{Target: t, Error: err.Error()}
		d.audit.Write(c, action+" --fleet", t, r, req.For, req.Reason)
		out = append(out, r)
	}
	return out
}

// fleetChange makes a fleet-wide decision: an allow, a disallow or an
// unblock, written under admin/ with the fleet's admin credential. Every
// node, this one included, applies it from there.
func (d *daemon) fleetChange(ctx context.Context, c api.Caller, action string, req api.ChangeRequest) []api.Result {
	fl := d.fleet
	switch {
	case fl == nil:
		return d.refuseAll(c, action, req, api.ErrNoFleet)
	case fl.admin == nil:
		return d.refuseAll(c, action, req, errNoAdmin)
	case req.All:
		return d.refuseAll(c, action, req, errors.New("--all and --fleet do not go together: name the prefixes"))
	}
	by := fmt.Sprintf("%s (%s)", d.start.Fleet.Node, c)
	now := d.state.Now()
	out := make([]api.Result, 0, len(req.Targets))
	for _, t := range req.Targets {
		res := api.Result{Target: t}
		check := map[string]func(netip.Prefix) error{"allow": policy.CheckAllow}[action]
		if p, ok := decision.ParseTarget(&res, req.For, check); ok {
			var err error
			switch action {
			case "allow":
				err = fl.admin.Allow(ctx, fleet.Allow{Prefix: p, Reason: req.Reason, By: by, Created: now, ExpiresAt: expiresAfter(now, req.For)})
			case "disallow":
				var found bool
				if found, err = fl.admin.Disallow(ctx, p); err == nil && !found {
					err = fmt.Errorf("%s is not on the fleet's allowlist", p)
				}
			case "unblock":
				err = fl.admin.Unblock(ctx, p, by)
			}
			if err != nil {
				res.Error = "fleet: " + err.Error()
			} else {
				res.OK = true
				d.log.Info("fleet-wide decision written", "action", action, "prefix", p, "by", by)
			}
		}
		d.audit.Write(c, action+" --fleet", t, res, req.For, req.Reason)
		out = append(out, res)
	}
	return out
}

// fleetStatus is hbf fleet status.
func (d *daemon) fleetStatus() (api.FleetStatus, error) {
	fl := d.fleet
	if fl == nil {
		return api.FleetStatus{}, api.ErrNoFleet
	}
	st, v := fl.node.Status(), fl.node.View()
	out := api.FleetStatus{Node: fl.cfg.Node, Prefix: fl.cfg.Prefix, Endpoints: fl.cfg.Etcd, Connected: st.Connected,
		Why: st.Why, Since: st.Since, Revision: st.Revision, Admin: fl.admin != nil, Entries: d.state.FleetEntries(),
		Published: len(v.Blocks[fl.cfg.Node])}
	for name, m := range v.Members {
		out.Members = append(out.Members, api.FleetMember{Node: name, HBF: m.HBF, Addrs: m.Addrs, Clock: m.Clock,
			Skew: m.Skew().Round(100 * time.Millisecond).String()})
	}
	slices.SortFunc(out.Members, func(a, b api.FleetMember) int { return strings.Compare(a.Node, b.Node) })
	fl.mu.Lock()
	out.Pending = fl.pending
	fl.mu.Unlock()
	return out, nil
}
