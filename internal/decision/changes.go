package decision

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/protect"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/store"
)

// each does one change per target under the lock, and audits each.
func (e *Engine) each(c api.Caller, action string, targets []string, d time.Duration, reason string,
	do func(target string) api.Result) []api.Result {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]api.Result, 0, len(targets))
	for _, t := range targets {
		r := do(t)
		e.audit.Write(c, action, t, r, d, reason)
		out = append(out, r)
	}
	return out
}

// ParseTarget reads res.Target for a change lasting d (0: no expiry) and
// runs check on it; on refusal it fills res.Error.
func ParseTarget(res *api.Result, d time.Duration, check func(netip.Prefix) error) (netip.Prefix, bool) {
	if d < 0 {
		res.Error = fmt.Sprintf("--for %s: must not be negative (0 means no expiry)", d)
		return netip.Prefix{}, false
	}
	p, err := policy.ParsePrefix(res.Target)
	if err != nil {
		res.Error = err.Error()
		return p, false
	}
	res.Prefix = p
	if check != nil {
		if err := check(p); err != nil {
			res.Error = err.Error()
			return p, false
		}
	}
	return p, true
}

// Block blocks each target for d (0: no expiry).
// With shared, the fleet gets the blocks too.
func (e *Engine) Block(c api.Caller, targets []string, d time.Duration, reason string, shared bool) []api.Result {
	return e.BlockAs(c, store.OriginManual, targets, d, reason, shared)
}

// BlockAs blocks each target for d as origin's: a caller's origin
// (store.ParseCallerOrigin), whose blocks UnblockAs ends alone.
func (e *Engine) BlockAs(c api.Caller, origin store.Origin, targets []string, d time.Duration, reason string, shared bool) []api.Result {
	return e.each(c, "block", targets, d, reason, func(t string) api.Result { return e.block(c, origin, t, d, reason, shared) })
}

func (e *Engine) block(c api.Caller, origin store.Origin, target string, d time.Duration, reason string, shared bool) api.Result {
	res := api.Result{Target: target}
	p, ok := ParseTarget(&res, d, e.checkBlock)
	if !ok {
		return res
	}
	now := e.now()
	switch {
	case reason != "":
	case origin == store.OriginManual:
		reason = "manual block"
	default:
		reason = "banned by " + string(origin)
	}
	b := store.Block{Prefix: p, Origin: origin, Reason: reason, By: c.String(), Created: now, Expires: Expiry(now, d),
		Fleet: shared}
	after := maps.Clone(e.blocks[p])
	if after == nil {
		after = map[store.Origin]store.Block{}
	}
	after[origin] = b
	if err := e.commit(e.blocksEdit("block", p, after)); err != nil {
		res.Error = err.Error()
		return res
	}
	e.history(store.Change{Time: now, Action: "block", Prefix: p, Origin: origin, Reason: reason, By: c.String()})
	e.publish(&report.Block{Time: now, Prefix: p, Reason: reason, Duration: d, Expires: b.Expires})
	res.OK = true
	return res
}

// Unblock removes the manual, scan and recovered blocks of each target, or
// of everything with all. A list's entries stay: they are the list's; so
// do the fleet's and CrowdSec's, whose sources would not send them again.
func (e *Engine) Unblock(c api.Caller, targets []string, all bool) []api.Result {
	if all {
		e.mu.Lock()
		targets = nil
		for p, recs := range e.blocks {
			if len(recs) > len(e.fleetRecords(p))+len(e.crowdsecRecords(p)) { // the fleet's and CrowdSec's stay
				targets = append(targets, p.String())
			}
		}
		e.mu.Unlock()
		slices.Sort(targets)
	}
	return e.each(c, "unblock", targets, 0, "", func(t string) api.Result { return e.unblock(c, t) })
}

func (e *Engine) unblock(c api.Caller, target string) api.Result {
	res := api.Result{Target: target}
	p, ok := ParseTarget(&res, 0, nil)
	if !ok {
		return res
	}
	fleetRecs, crowdsecRecs := e.fleetRecords(p), e.crowdsecRecords(p)
	kept := map[store.Origin]store.Block{}
	maps.Copy(kept, fleetRecs)
	maps.Copy(kept, crowdsecRecs)
	if len(e.blocks[p]) == len(kept) {
		switch path := e.listHolding(p); {
		case path != "":
			res.Error = fmt.Sprintf("%s is listed in %s: remove it there", p, path)
		case len(crowdsecRecs) > 0:
			res.Error = fmt.Sprintf("%s is blocked by CrowdSec's decisions (%s): %s ends them, hbf allow exempts this host",
				p, originsOf(crowdsecRecs), cscliDelete(p))
		case len(fleetRecs) > 0:
			res.Error = fmt.Sprintf("%s is blocked by the fleet (%s): hbf unblock --fleet ends it everywhere, hbf allow exempts this host",
				p, originsOf(fleetRecs))
		default:
			res.Error = fmt.Sprintf("%s is not blocked", p)
		}
		return res
	}
	if err := e.commit(e.blocksEdit("unblock", p, kept)); err != nil {
		res.Error = err.Error()
		return res
	}
	now := e.now()
	e.history(store.Change{Time: now, Action: "unblock", Prefix: p, By: c.String()})
	e.publish(&report.Unblock{Time: now, Prefix: p, By: c.String()})
	if path := e.listHolding(p); path != "" {
		res.Error = fmt.Sprintf("unblocked, but %s also lists %s: it stays blocked until removed there", path, p)
		return res
	}
	if len(crowdsecRecs) > 0 {
		res.Error = fmt.Sprintf("unblocked here, but CrowdSec's decisions block %s too (%s): %s ends them", p,
			originsOf(crowdsecRecs), cscliDelete(p))
		return res
	}
	if len(fleetRecs) > 0 {
		res.Error = fmt.Sprintf("unblocked here, but the fleet blocks %s too (%s): hbf unblock --fleet ends that", p, originsOf(fleetRecs))
		return res
	}
	res.OK = true
	return res
}

// cscliDelete is the command that deletes CrowdSec's decisions of p.
func cscliDelete(p netip.Prefix) string {
	if p.IsSingleIP() {
		return "cscli decisions delete --ip " + p.Addr().String()
	}
	return "cscli decisions delete --range " + p.String()
}

// originsOf names the origins of records: "fleet:a, fleet:b".
func originsOf(recs map[store.Origin]store.Block) string {
	names := make([]string, 0, len(recs))
	for o := range recs {
		names = append(names, string(o))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// Allow puts each target on the allowlist for d (0: no expiry).
func (e *Engine) Allow(c api.Caller, targets []string, d time.Duration, reason string) []api.Result {
	return e.each(c, "allow", targets, d, reason, func(t string) api.Result { return e.allow(c, t, d, reason) })
}

func (e *Engine) allow(c api.Caller, target string, d time.Duration, reason string) api.Result {
	res := api.Result{Target: target}
	p, ok := ParseTarget(&res, d, policy.CheckAllow)
	if !ok {
		return res
	}
	now := e.now()
	a := store.Allow{Prefix: p, Origin: store.OriginManual, Reason: reason, By: c.String(), Created: now, Expires: Expiry(now, d)}
	if err := e.commit(e.allowEdit("allow", p, &a)); err != nil {
		res.Error = err.Error()
		return res
	}
	e.history(store.Change{Time: now, Action: "allow", Prefix: p, Origin: store.OriginManual, Reason: reason, By: c.String()})
	e.publish(&report.Allow{Time: now, Prefix: p, Reason: reason, Duration: d, Expires: a.Expires, By: c.String()})
	res.OK = true
	return res
}

// Disallow removes each target from the allowlist. What is protected for
// another reason (the host, loopback, the SSH client, --allow, the fleet's
// etcd and members) cannot be removed at run time.
func (e *Engine) Disallow(c api.Caller, targets []string) []api.Result {
	return e.each(c, "disallow", targets, 0, "", func(t string) api.Result { return e.disallow(c, t) })
}

func (e *Engine) disallow(c api.Caller, target string) api.Result {
	res := api.Result{Target: target}
	p, ok := ParseTarget(&res, 0, nil)
	if !ok {
		return res
	}
	for _, f := range e.base {
		if f.Prefix == p {
			res.Error = fmt.Sprintf("%s is %s: always allowed", p, f.Why)
			return res
		}
	}
	if _, ok := e.allows[p]; !ok {
		res.Error = fmt.Sprintf("%s is not on the allowlist", p)
		return res
	}
	if err := e.commit(e.allowEdit("disallow", p, nil)); err != nil {
		res.Error = err.Error()
		return res
	}
	now := e.now()
	e.history(store.Change{Time: now, Action: "disallow", Prefix: p, By: c.String()})
	e.publish(&report.Disallow{Time: now, Prefix: p, By: c.String()})
	res.OK = true
	return res
}

// edit is one change of the decisions on a prefix: set puts in the store,
// and its cache, the records after the change (or, undoing it, before);
// sync brings the kernel in step with the records.
type edit struct {
	what string // "block 192.0.2.7/32", for the log
	set  func(after bool) error
	sync func() error
}

// commit makes a change in the order every change takes: store, then
// kernel. When the kernel refuses, the store is put back as it was, so it
// never claims what the kernel does not do. When that fails too, the two
// disagree until the next reconciliation brings the kernel in step with
// the store: that is logged and counted, never dropped.
func (e *Engine) commit(ed edit) error {
	if err := ed.set(true); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	err := ed.sync()
	if err == nil {
		e.changed()
		return nil
	}
	undo := ed.set(false)
	if undo == nil {
		undo = ed.sync()
	}
	if undo != nil {
		e.undoFailures++
		e.log.Error("a change the kernel refused could not be undone; the store and the kernel disagree until the next reconciliation",
			"change", ed.what, "refused", err, "undo", undo)
	}
	return fmt.Errorf("kernel: %w", err)
}

// blocksEdit changes the block records of p to after (none: nil); the
// kernel's entry follows them.
func (e *Engine) blocksEdit(action string, p netip.Prefix, after map[store.Origin]store.Block) edit {
	before := maps.Clone(e.blocks[p])
	origins := slices.Collect(maps.Keys(before))
	for o := range after {
		if _, ok := before[o]; !ok {
			origins = append(origins, o)
		}
	}
	set := func(toAfter bool) error {
		recs := before
		if toAfter {
			recs = after
		}
		var drop []store.Origin
		for _, o := range origins {
			if _, ok := recs[o]; !ok {
				drop = append(drop, o)
			}
		}
		if err := e.st.ReplaceBlocks(p, drop, slices.Collect(maps.Values(recs))...); err != nil {
			return err
		}
		had := len(e.blocks[p]) > 0
		if len(recs) == 0 {
			delete(e.blocks, p)
		} else {
			e.blocks[p] = maps.Clone(recs)
		}
		if has := len(recs) > 0; has != had {
			e.counted(p, has)
		}
		return nil
	}
	return edit{what: action + " " + p.String(), set: set, sync: func() error { return e.syncKernel(p) }}
}

// allowEdit changes the allowlist entry of p to after (none: nil); the
// kernel's allowlist follows the entries.
func (e *Engine) allowEdit(action string, p netip.Prefix, after *store.Allow) edit {
	var before *store.Allow
	if a, ok := e.allows[p]; ok {
		before = &a
	}
	set := func(toAfter bool) error {
		a := before
		if toAfter {
			a = after
		}
		if a == nil {
			if _, err := e.st.DeleteAllow(store.OriginManual, p); err != nil {
				return err
			}
			delete(e.allows, p)
			return nil
		}
		if err := e.st.PutAllows(*a); err != nil {
			return err
		}
		e.allows[p] = *a
		return nil
	}
	sync := func() error {
		if err := e.syncAllows(); err != nil {
			return err
		}
		if _, ok := e.allows[p]; ok {
			return e.enforced(p)
		}
		return nil
	}
	return edit{what: action + " " + p.String(), set: set, sync: sync}
}

// syncAllows makes the protected set what base and the allowlist say,
// and the kernel's allowlist exactly its entries, as many as there is room
// for, the first kinds first: an entry an earlier run left for settings
// that changed must not keep exempting anyone. New entries go in before
// old ones go, but where that would overfill the map.
func (e *Engine) syncAllows() error {
	next := e.protectedWith(e.base)
	if !next.Protects(e.protected) {
		e.policy++
	}
	e.protected = next
	in, left := e.protected.Kernel(e.k.Capacity().Allows)
	unenforced := map[protect.Kind]int{}
	for _, l := range left {
		unenforced[l.Kind]++
	}
	if !maps.Equal(unenforced, e.unenforced) && len(left) > 0 {
		e.log.Error("the kernel's allowlist is full: protected entries of the last kinds are not in it, and a forged scan "+
			"could block them (decisions never do)", "room", len(in), "left_out", unenforced)
	}
	e.unenforced = unenforced
	want := make(map[netip.Prefix]time.Time, len(in))
	for _, en := range in {
		want[en.Prefix] = en.Expires
	}
	have, err := e.k.Allows()
	if err != nil {
		return err
	}
	var stale []netip.Prefix
	for _, r := range have {
		exp, ok := want[r.Prefix]
		switch {
		case !ok:
			stale = append(stale, r.Prefix)
		case sameTime(exp, r.Expires):
			delete(want, r.Prefix) // in step already
		}
	}
	removeStale := func() error {
		for _, p := range stale {
			if _, err := e.k.Disallow(p); err != nil {
				return err
			}
		}
		return nil
	}
	if len(have)+len(want) > e.k.Capacity().Allows {
		if err := removeStale(); err != nil {
			return err
		}
		stale = nil
	}
	for p, exp := range want {
		if err := e.k.Allow(p, exp); err != nil {
			return err
		}
	}
	return removeStale()
}

// enforced says why the kernel's allowlist does not hold p, a protected
// entry, or nil when it does.
func (e *Engine) enforced(p netip.Prefix) error {
	in, _ := e.protected.Kernel(e.k.Capacity().Allows)
	for _, en := range in {
		if en.Prefix == p {
			return nil
		}
	}
	return fmt.Errorf("the kernel's allowlist is full (%d entries, the host's own, its gateways, resolvers and "+
		"the fleet's etcd first): disallow another entry first", len(in))
}
