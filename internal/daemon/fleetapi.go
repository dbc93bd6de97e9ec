package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/decision"
	"github.com/hbf-firewall/hbf/internal/fleet"
	"github.com/hbf-firewall/hbf/internal/policy"
)

// What the API does with the fleet: fleet-wide decisions, written with
// the fleet's admin credential, and hbf fleet status.

// errNoFleet refuses what needs a fleet, saying how to join one.
var errNoFleet = fmt.Errorf("%w: start the daemon with --fleet-etcd", api.ErrNoFleet)

// errNoAdmin refuses a fleet-wide change on a node without the credential.
var errNoAdmin = errors.New("this node holds no fleet admin credential (--fleet-admin-cert and --fleet-admin-key, " +
	"or --fleet-admin-user): issue it on a node that has one")

// canShare says why this host cannot publish a manual block, if it cannot.
func (d *daemon) canShare() error {
	switch {
	case d.fleet == nil:
		return errNoFleet
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
		return d.refuseAll(c, action, req, errNoFleet)
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
				err = fl.admin.Allow(ctx, fleet.Allow{Prefix: p, Reason: req.Reason, By: by, Created: now, ExpiresAt: decision.Expiry(now, req.For)})
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
		return api.FleetStatus{}, errNoFleet
	}
	st := fl.node.Status()
	members, published := fl.node.Members()
	out := api.FleetStatus{Node: fl.cfg.Node, Prefix: fl.cfg.Prefix, Endpoints: fl.cfg.Etcd, Connected: st.Connected,
		Why: st.Why, Since: st.Since, Revision: st.Revision, Admin: fl.admin != nil, Entries: d.state.FleetEntries(),
		Published: published}
	for name, m := range members {
		out.Members = append(out.Members, api.FleetMember{Node: name, HBF: m.HBF, Addrs: m.Addrs, Clock: m.Clock,
			Skew: m.Skew().Round(100 * time.Millisecond).String()})
	}
	slices.SortFunc(out.Members, func(a, b api.FleetMember) int { return strings.Compare(a.Node, b.Node) })
	fl.mu.Lock()
	out.Pending = fl.pending
	fl.mu.Unlock()
	return out, nil
}
