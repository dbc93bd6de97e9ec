package daemon

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/decision"
	"github.com/hbf-firewall/hbf/internal/fleet"
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

	skewed map[string]bool // members whose clock skew was logged
	// members are the fleet's members and the addresses each publishes,
	// as last seen (and stored).
	members map[string][]netip.Addr

	// allows are the fleet's allowlist as last read; allowsUntil is when
	// the next of those applied ends (zero: none ends).
	allows      map[netip.Prefix]fleet.Allow
	allowsUntil time.Time

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
	tlsCfg, err := fleet.TLS(f.Etcd, f.CA, f.Cert, f.Key)
	if err != nil {
		return fmt.Errorf("--fleet-ca/--fleet-cert/--fleet-key: %w", err)
	}
	password, err := fleet.ReadSecret(f.PasswordFile)
	if err != nil {
		return fmt.Errorf("--fleet-password-file: %w", err)
	}
	members, err := d.st.Members()
	if err != nil {
		return fmt.Errorf("read the store: %w", err)
	}
	fl := &fleetLink{d: d, cfg: f, rejected: map[string]uint64{}, skewed: map[string]bool{}, members: members,
		recv: fleet.NewReceiver(f.Node, fleet.Limits{MinReporters: f.MinReporters, PerMinute: f.AcceptPerMinute, Quota: f.Quota})}
	fl.node, err = fleet.NewNode(fleet.Config{Endpoints: f.Etcd, Layout: layout, Node: f.Node, TLS: tlsCfg,
		Username: f.User, Password: password, Member: fl.member, Log: d.log.With("fleet", f.Node),
		Own: func() []fleet.Block {
			return d.state.Shareable(decision.Share{Scans: f.ShareScans, Limits: f.ShareLimits, Manual: f.ShareManual})
		}})
	if err != nil {
		return fmt.Errorf("--node-name %w", err)
	}
	if f.Admin() {
		adminTLS, err := fleet.TLS(f.Etcd, f.CA, f.AdminCert, f.AdminKey)
		if err != nil {
			return fmt.Errorf("--fleet-admin-cert/--fleet-admin-key: %w", err)
		}
		adminPassword, err := fleet.ReadSecret(f.AdminPasswordFile)
		if err != nil {
			return fmt.Errorf("--fleet-admin-password-file: %w", err)
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
	d.state.OnChange(fl.node.Republish)
	d.fleet = fl
	return nil
}

// member is what this host says of itself in the fleet: its global
// unicast addresses, which the others protect (a loopback or link-local
// one is no one's to protect, and they would refuse it).
func (fl *fleetLink) member() fleet.Member {
	addrs := slices.DeleteFunc(slices.Clone(fl.d.hostSnapshot().Addrs), func(a netip.Addr) bool { return !a.IsGlobalUnicast() })
	return fleet.Member{HBF: fl.d.deps.Version, Interfaces: fl.d.start.Ifaces, Addrs: addrs}
}

// run works with the fleet until ctx ends.
func (fl *fleetLink) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { fl.node.Run(ctx) })
	wg.Go(func() { fl.receive(ctx) })
	wg.Wait()
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

// apply brings this host's fleet decisions in step with what changed in
// the view: the fleet's allowlist first (it protects), its unblocks, the
// members, then the blocks the receiver decides. Its cost follows the
// changes, not the fleet's size: the once-a-second call with nothing
// changed looks only at what expires or waits for a budget.
func (fl *fleetLink) apply() {
	d, s := fl.d, fl.d.state
	c := fl.node.Take()
	if c.Revision == 0 {
		// Not read yet (etcd away since the start): what this host applied
		// before stays, as the kernel and the store hold it.
		return
	}
	now := s.Now()
	if c.Allows != nil {
		fl.allows = c.Allows
	}
	if c.Allows != nil || !fl.allowsUntil.IsZero() && !now.Before(fl.allowsUntil) {
		fl.applyAllows(now)
	}
	if c.Unblocks != nil {
		s.EndByFleet(c.Unblocks)
	}
	// Before the blocks: a member that joined is protected from them.
	fl.followMembers(c.Members, c.Left, c.Whole)
	fl.warnSkew(c.Members, c.Left)
	check, generation := s.BlockChecker()
	dec := fl.recv.Update(c, fl.node.Block, fleet.Policy{Check: check, Generation: generation}, now)
	var added, removed int
	if len(dec.Apply)+len(dec.Remove) > 0 {
		var err error
		if added, removed, err = s.ApplyFleet(dec.Apply, dec.Remove); err != nil {
			d.log.Error("the fleet's blocks could not all be applied here", "err", err)
		}
	}
	for _, a := range dec.New() {
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
	fl.pending, fl.applied = dec.Pending, dec.Applied
	fl.mu.Unlock()
	if added+removed > 0 {
		d.log.Info("the fleet's blocks applied here", "added", added, "removed", removed, "revision", c.Revision)
	}
}

// applyAllows applies the fleet's allowlist entries live at now, and
// notes when the next of them ends.
func (fl *fleetLink) applyAllows(now time.Time) {
	live := map[netip.Prefix]fleet.Allow{}
	fl.allowsUntil = time.Time{}
	for p, a := range fl.allows {
		if a.Expired(now) {
			continue
		}
		live[p] = a
		if !a.ExpiresAt.IsZero() && (fl.allowsUntil.IsZero() || a.ExpiresAt.Before(fl.allowsUntil)) {
			fl.allowsUntil = a.ExpiresAt
		}
	}
	if err := fl.d.state.SetFleetAllows(live); err != nil {
		fl.d.log.Error("the fleet's allowlist could not be applied whole", "err", err)
	}
}

// maxSkew is the clock skew past which a member is warned of: expiries
// and delays are absolute times, which assume the clocks agree.
const maxSkew = 3 * time.Second

// warnSkew logs, once while it lasts, a member whose clock is off, as
// members write their keys.
func (fl *fleetLink) warnSkew(members map[string]fleet.Member, left []string) {
	for _, name := range left {
		delete(fl.skewed, name)
	}
	for name, m := range members {
		off := m.Skew().Abs() > maxSkew
		if off && !fl.skewed[name] {
			fl.d.log.Warn("a fleet member's clock is off: expiries and delays assume synchronised clocks (NTP)",
				"member", name, "skew", m.Skew().Round(100*time.Millisecond))
		}
		fl.skewed[name] = off
	}
}

// followMembers protects the addresses the fleet's members publish now,
// as this host's policy takes them (protect.Members), and keeps them for
// the next start: a member that joins is protected, one that leaves is
// not any more. changed are the members that wrote their keys, gone
// those that left; whole: changed are all of them. A member's addresses refused
// are counted and logged when it publishes them.
func (fl *fleetLink) followMembers(changed map[string]fleet.Member, gone []string, whole bool) {
	d := fl.d
	now, copied := fl.members, false
	edit := func() {
		if !copied {
			now, copied = maps.Clone(now), true
			if now == nil {
				now = map[string][]netip.Addr{}
			}
		}
	}
	if whole {
		now, copied = map[string][]netip.Addr{}, true
	}
	for name, m := range changed {
		if name == fl.cfg.Node {
			continue // this host's own are protected as its own
		}
		if old, ok := now[name]; !ok || !slices.Equal(old, m.Addrs) {
			edit()
			now[name] = m.Addrs
		}
	}
	for _, name := range gone {
		if _, ok := now[name]; ok {
			edit()
			delete(now, name)
		}
	}
	// Most often a member wrote its key again with its clock alone.
	if !copied || maps.EqualFunc(now, fl.members, slices.Equal) {
		return
	}
	// Counted once the kernel protects what was accepted: whoever reads
	// the counts finds the allowlist in step.
	rejected := map[string]int{}
	defer func() {
		fl.mu.Lock()
		for reason, n := range rejected {
			fl.rejected[reason] += uint64(n)
		}
		fl.mu.Unlock()
	}()
	for name, addrs := range now {
		if old, ok := fl.members[name]; ok && slices.Equal(old, addrs) {
			continue
		}
		_, refused := protect.Members(map[string][]netip.Addr{name: addrs}, fl.cfg.MemberPrefixes)
		if len(refused) == 0 {
			continue
		}
		d.log.Warn("a fleet member publishes addresses this host does not protect", "member", name, "refused", refused,
			"limits", fmt.Sprintf("global unicast, at most %d, inside --fleet-member-prefixes when set", protect.MaxMemberAddrs))
		for reason, n := range refused {
			rejected[reason] += n
		}
	}
	var joined, left []string
	for name := range now {
		if _, ok := fl.members[name]; !ok {
			joined = append(joined, name)
		}
	}
	for name := range fl.members {
		if _, ok := now[name]; !ok {
			left = append(left, name)
		}
	}
	entries, _ := protect.Members(now, fl.cfg.MemberPrefixes)
	fl.members = now
	d.reloadMu.Lock()
	d.mu.Lock()
	d.guard.members = entries
	d.mu.Unlock()
	err := d.applyProtected()
	d.reloadMu.Unlock()
	if err != nil {
		d.log.Error("cannot update the never-block list in the kernel", "err", err)
	}
	if err := d.st.SaveMembers(now); err != nil {
		d.log.Warn("cannot keep the fleet's members for the next start", "err", err)
	}
	d.log.Info("the fleet's members changed; the addresses they publish are never blocked", "joined", joined, "left", left,
		"protected", len(entries))
}
