package daemon

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/store"
)

// each does one change per target under the lock, and audits each.
func (s *state) each(c api.Caller, action string, targets []string, d time.Duration, reason string,
	do func(target string) api.Result) []api.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]api.Result, 0, len(targets))
	for _, t := range targets {
		r := do(t)
		s.audit.write(c, action, t, r, d, reason)
		out = append(out, r)
	}
	return out
}

// parseTarget reads res.Target for a change lasting d (0: no expiry) and
// runs check on it; on refusal it fills res.Error.
func parseTarget(res *api.Result, d time.Duration, check func(netip.Prefix) error) (netip.Prefix, bool) {
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
func (s *state) Block(c api.Caller, targets []string, d time.Duration, reason string, shared bool) []api.Result {
	return s.each(c, "block", targets, d, reason, func(t string) api.Result { return s.block(c, t, d, reason, shared) })
}

func (s *state) block(c api.Caller, target string, d time.Duration, reason string, shared bool) api.Result {
	res := api.Result{Target: target}
	p, ok := parseTarget(&res, d, s.checkBlock)
	if !ok {
		return res
	}
	now := s.now()
	if reason == "" {
		reason = "manual block"
	}
	b := store.Block{Prefix: p, Origin: store.OriginManual, Reason: reason, By: c.String(), Created: now, Expires: expiry(now, d),
		Fleet: shared}
	after := maps.Clone(s.blocks[p])
	if after == nil {
		after = map[store.Origin]store.Block{}
	}
	after[store.OriginManual] = b
	if err := s.commit(s.blocksEdit("block", p, after)); err != nil {
		res.Error = err.Error()
		return res
	}
	s.history(store.Change{Time: now, Action: "block", Prefix: p, Origin: store.OriginManual, Reason: reason, By: c.String()})
	s.publish(&report.Block{Time: now, Prefix: p, Reason: reason, Duration: d, Expires: b.Expires})
	res.OK = true
	return res
}

// Unblock removes the manual, scan and recovered blocks of each target, or
// of everything with all. A list's entries stay: they are the list's.
func (s *state) Unblock(c api.Caller, targets []string, all bool) []api.Result {
	if all {
		s.mu.Lock()
		targets = nil
		for p, recs := range s.blocks {
			if len(recs) > len(s.fleetRecords(p)) { // the fleet's stay: unblock --fleet ends them
				targets = append(targets, p.String())
			}
		}
		s.mu.Unlock()
		slices.Sort(targets)
	}
	return s.each(c, "unblock", targets, 0, "", func(t string) api.Result { return s.unblock(c, t) })
}

func (s *state) unblock(c api.Caller, target string) api.Result {
	res := api.Result{Target: target}
	p, ok := parseTarget(&res, 0, nil)
	if !ok {
		return res
	}
	fleetRecs := s.fleetRecords(p)
	if len(s.blocks[p]) == len(fleetRecs) {
		switch path := s.listHolding(p); {
		case path != "":
			res.Error = fmt.Sprintf("%s is listed in %s: remove it there", p, path)
		case len(fleetRecs) > 0:
			res.Error = fmt.Sprintf("%s is blocked by the fleet (%s): hbf unblock --fleet ends it everywhere, hbf allow exempts this host",
				p, fleetOrigins(fleetRecs))
		default:
			res.Error = fmt.Sprintf("%s is not blocked", p)
		}
		return res
	}
	if err := s.commit(s.blocksEdit("unblock", p, fleetRecs)); err != nil {
		res.Error = err.Error()
		return res
	}
	now := s.now()
	s.history(store.Change{Time: now, Action: "unblock", Prefix: p, By: c.String()})
	s.publish(&report.Unblock{Time: now, Prefix: p, By: c.String()})
	if path := s.listHolding(p); path != "" {
		res.Error = fmt.Sprintf("unblocked, but %s also lists %s: it stays blocked until removed there", path, p)
		return res
	}
	if len(fleetRecs) > 0 {
		res.Error = fmt.Sprintf("unblocked here, but the fleet blocks %s too (%s): hbf unblock --fleet ends that", p, fleetOrigins(fleetRecs))
		return res
	}
	res.OK = true
	return res
}

// fleetOrigins names the nodes of fleet records: "fleet:a, fleet:b".
func fleetOrigins(recs map[store.Origin]store.Block) string {
	names := make([]string, 0, len(recs))
	for o := range recs {
		names = append(names, string(o))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// Allow puts each target on the allowlist for d (0: no expiry).
func (s *state) Allow(c api.Caller, targets []string, d time.Duration, reason string) []api.Result {
	return s.each(c, "allow", targets, d, reason, func(t string) api.Result { return s.allow(c, t, d, reason) })
}

func (s *state) allow(c api.Caller, target string, d time.Duration, reason string) api.Result {
	res := api.Result{Target: target}
	p, ok := parseTarget(&res, d, policy.CheckAllow)
	if !ok {
		return res
	}
	now := s.now()
	a := store.Allow{Prefix: p, Origin: store.OriginManual, Reason: reason, By: c.String(), Created: now, Expires: expiry(now, d)}
	if err := s.commit(s.allowEdit("allow", p, &a)); err != nil {
		res.Error = err.Error()
		return res
	}
	s.history(store.Change{Time: now, Action: "allow", Prefix: p, Origin: store.OriginManual, Reason: reason, By: c.String()})
	s.publish(&report.Allow{Time: now, Prefix: p, Reason: reason, Duration: d, Expires: a.Expires, By: c.String()})
	res.OK = true
	return res
}

// Disallow removes each target from the allowlist. The fixed allows (the
// host, loopback, the SSH client, --allow) cannot be removed at run time.
func (s *state) Disallow(c api.Caller, targets []string) []api.Result {
	return s.each(c, "disallow", targets, 0, "", func(t string) api.Result { return s.disallow(c, t) })
}

func (s *state) disallow(c api.Caller, target string) api.Result {
	res := api.Result{Target: target}
	p, ok := parseTarget(&res, 0, nil)
	if !ok {
		return res
	}
	for _, f := range s.fixed {
		if f.prefix == p {
			res.Error = fmt.Sprintf("%s is %s: always allowed", p, f.why)
			return res
		}
	}
	if _, ok := s.allows[p]; !ok {
		res.Error = fmt.Sprintf("%s is not on the allowlist", p)
		return res
	}
	if err := s.commit(s.allowEdit("disallow", p, nil)); err != nil {
		res.Error = err.Error()
		return res
	}
	now := s.now()
	s.history(store.Change{Time: now, Action: "disallow", Prefix: p, By: c.String()})
	s.publish(&report.Disallow{Time: now, Prefix: p, By: c.String()})
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
func (s *state) commit(e edit) error {
	if err := e.set(true); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	err := e.sync()
	if err == nil {
		s.changed()
		return nil
	}
	undo := e.set(false)
	if undo == nil {
		undo = e.sync()
	}
	if undo != nil {
		s.undoFailures++
		s.log.Error("a change the kernel refused could not be undone; the store and the kernel disagree until the next reconciliation",
			"change", e.what, "refused", err, "undo", undo)
	}
	return fmt.Errorf("kernel: %w", err)
}

// blocksEdit changes the block records of p to after (none: nil); the
// kernel's entry follows them.
func (s *state) blocksEdit(action string, p netip.Prefix, after map[store.Origin]store.Block) edit {
	before := maps.Clone(s.blocks[p])
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
		if err := s.st.ReplaceBlocks(p, drop, slices.Collect(maps.Values(recs))...); err != nil {
			return err
		}
		if len(recs) == 0 {
			delete(s.blocks, p)
		} else {
			s.blocks[p] = maps.Clone(recs)
		}
		return nil
	}
	return edit{what: action + " " + p.String(), set: set, sync: func() error { return s.syncKernel(p) }}
}

// allowEdit changes the allowlist entry of p to after (none: nil); the
// kernel's allowlist follows the entries.
func (s *state) allowEdit(action string, p netip.Prefix, after *store.Allow) edit {
	var before *store.Allow
	if a, ok := s.allows[p]; ok {
		before = &a
	}
	set := func(toAfter bool) error {
		a := before
		if toAfter {
			a = after
		}
		if a == nil {
			if _, err := s.st.DeleteAllow(store.OriginManual, p); err != nil {
				return err
			}
			delete(s.allows, p)
			return nil
		}
		if err := s.st.PutAllows(*a); err != nil {
			return err
		}
		s.allows[p] = *a
		return nil
	}
	return edit{what: action + " " + p.String(), set: set, sync: s.syncAllows}
}

// syncAllows makes the kernel's allowlist exactly the fixed allows and the
// allowlist entries: an entry an earlier run left for settings that changed
// must not keep exempting anyone.
func (s *state) syncAllows() error {
	want := map[netip.Prefix]time.Time{}
	for _, f := range s.fixed {
		want[f.prefix] = time.Time{}
	}
	now := s.now()
	for a := range s.allAllows() {
		p := a.Prefix
		if a.Expired(now) {
			continue
		}
		if exp, ok := want[p]; ok && exp.IsZero() {
			continue // a fixed or permanent allow already covers it
		}
		want[p] = a.Expires
	}
	have, err := s.k.Allows()
	if err != nil {
		return err
	}
	for _, r := range have {
		if _, ok := want[r.Prefix]; !ok {
			if _, err := s.k.Disallow(r.Prefix); err != nil {
				return err
			}
		}
	}
	for p, exp := range want {
		if err := s.k.Allow(p, exp); err != nil {
			return err
		}
	}
	return nil
}

// SetEscalation sets the escalation schedule and the first offence's
// duration (at start and reload).
func (s *state) SetEscalation(esc policy.Escalation, first time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.esc, s.blockDuration = esc, first
}

// escalate counts the scan block of src made at created, and returns its
// expiry per the schedule and which offence it is. The kernel made it with
// the first offence's duration: a later offence lengthens it there.
func (s *state) escalate(p netip.Prefix, created, expires time.Time) (time.Time, int) {
	offence, err := s.st.Strike(p.Addr(), created, s.esc.Forget)
	if err != nil {
		s.log.Warn("cannot count a strike; the block keeps its first duration", "src", p, "err", err)
		return expires, 1
	}
	if offence <= 1 || expires.IsZero() {
		return expires, offence
	}
	longer := expiry(created, s.esc.Duration(offence, s.blockDuration))
	if sameTime(longer, expires) {
		return expires, offence
	}
	if err := s.k.Extend(p, longer); err != nil {
		s.log.Warn("cannot lengthen a repeat scanner's block", "src", p, "offence", offence, "err", err)
		return expires, offence
	}
	return longer, offence
}

func scanReason(offence int) string {
	if offence <= 1 {
		return "port scan"
	}
	return fmt.Sprintf("port scan (offence %d)", offence)
}

// OnScan records a block the kernel made for a scan, with its evidence and
// its escalation, and returns the block's expiry and reason.
func (s *state) OnScan(ev *dataplane.Scan) (time.Time, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := ev.Source
	expires, offence := s.escalate(p, ev.Time, ev.Expires)
	b := store.Block{Prefix: p, Origin: store.OriginScan, Reason: scanReason(offence), By: "kernel",
		Created: ev.Time, Expires: expires}
	for _, t := range ev.Ports {
		b.Ports = append(b.Ports, store.PortSeen{Port: t.Port.Num, Proto: t.Port.Proto, Seen: t.Seen})
	}
	if err := s.st.PutBlocks(b); err != nil {
		s.log.Error("cannot record a scan block; the kernel holds it and the next reconciliation retries",
			"src", ev.Src, "err", err)
		return expires, b.Reason
	}
	s.cacheBlock(b)
	s.history(store.Change{Time: ev.Time, Action: "block", Prefix: p, Origin: store.OriginScan, Reason: b.Reason, By: "kernel"})
	s.changed()
	return expires, b.Reason
}
