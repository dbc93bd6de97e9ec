package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/sources"
	"github.com/hbf-firewall/hbf/internal/store"
)

// fixedAllow is never blocked, whatever the store says: the host's own
// addresses, loopback, the SSH client, --allow.
type fixedAllow struct {
	prefix netip.Prefix
	origin string // host, loopback, ssh, flag
	why    string // for refusals: "an address of this host"
}

// listSource is a list file and the entries it holds. A list is replaced
// whole, never changed in place, so readers may use it without the lock.
type listSource struct {
	spec     sourceSpec
	list     *sources.List
	loaded   time.Time // when list was read
	degraded string    // why list is not the source's content now, or ""
	stamp    stamp     // a file's, when read: to notice edits
	checked  time.Time // a feed's last fetch
	// A feed's validators, for a conditional GET.
	etag, lastModified string
}

// state owns the decisions and keeps the store, the kernel's maps and the
// lists in step. Every change goes through it, under its lock, in this
// order: check, store, kernel. A change the kernel refuses is undone in the
// store, so the two never disagree for longer than the change takes.
type state struct {
	mu    sync.Mutex
	dp    *dataplane.Dataplane
	st    *store.Store
	rules policy.Rules
	fixed []fixedAllow
	lists []*listSource
	// Caches of the store's records, which are few (lists are not rows).
	blocks map[netip.Prefix]map[store.Origin]store.Block
	allows map[netip.Prefix]store.Allow

	// The escalation of scan blocks, and the first offence's duration.
	esc           policy.Escalation
	blockDuration time.Duration

	audit   *auditLog
	publish func(report.Event)
	log     *slog.Logger
	now     func() time.Time
}

func newState(dp *dataplane.Dataplane, st *store.Store, rules policy.Rules, fixed []fixedAllow,
	audit *auditLog, publish func(report.Event), log *slog.Logger) (*state, error) {
	s := &state{dp: dp, st: st, rules: rules, fixed: fixed, audit: audit, publish: publish, log: log,
		now: time.Now, blocks: map[netip.Prefix]map[store.Origin]store.Block{}, allows: map[netip.Prefix]store.Allow{}}
	blocks, err := st.Blocks()
	if err != nil {
		return nil, fmt.Errorf("read the store: %w", err)
	}
	for _, b := range blocks {
		s.cacheBlock(b)
	}
	allows, err := st.Allows()
	if err != nil {
		return nil, fmt.Errorf("read the store: %w", err)
	}
	for _, a := range allows {
		s.allows[a.Prefix] = a
	}
	return s, nil
}

func (s *state) cacheBlock(b store.Block) {
	m := s.blocks[b.Prefix]
	if m == nil {
		m = map[store.Origin]store.Block{}
		s.blocks[b.Prefix] = m
	}
	m[b.Origin] = b
}

func (s *state) uncacheBlock(origin store.Origin, p netip.Prefix) {
	delete(s.blocks[p], origin)
	if len(s.blocks[p]) == 0 {
		delete(s.blocks, p)
	}
}

// protected lists what no block may touch: the fixed allows and the live
// allowlist entries.
func (s *state) protected() []policy.Protected {
	return protectedFrom(s.fixed, maps.Values(s.allows), s.now())
}

func protectedFrom(fixed []fixedAllow, allows iter.Seq[store.Allow], now time.Time) []policy.Protected {
	var out []policy.Protected
	for _, f := range fixed {
		out = append(out, policy.Protected{Prefix: f.prefix, Why: f.why})
	}
	for a := range allows {
		if !a.Expired(now) {
			why := "on the allowlist"
			if a.Reason != "" {
				why += " (" + a.Reason + ")"
			}
			out = append(out, policy.Protected{Prefix: a.Prefix, Why: why})
		}
	}
	return out
}

// checkBlock is the policy check for a block of p.
func (s *state) checkBlock(p netip.Prefix) error {
	return checker(s.rules, s.protected())(p)
}

// listHolding names the list that holds exactly p, or "".
func (s *state) listHolding(p netip.Prefix) string {
	for _, l := range s.lists {
		if l.list.Has(p) {
			return l.spec.where
		}
	}
	return ""
}

// effective is what the kernel should hold for p: the latest expiry of
// every live decision on p (zero: never), and whether there is any.
func (s *state) effective(p netip.Prefix) (time.Time, bool) {
	if s.listHolding(p) != "" {
		return time.Time{}, true
	}
	now := s.now()
	var expires time.Time
	found := false
	for _, b := range s.blocks[p] {
		if b.Expired(now) {
			continue
		}
		if b.Expires.IsZero() {
			return time.Time{}, true
		}
		if !found || b.Expires.After(expires) {
			expires = b.Expires
		}
		found = true
	}
	return expires, found
}

// syncKernel makes the kernel's entry for p what the decisions say.
func (s *state) syncKernel(p netip.Prefix) error {
	if expires, ok := s.effective(p); ok {
		return s.dp.Block(p, expires)
	}
	_, err := s.dp.Unblock(p)
	return err
}

func expiry(now time.Time, d time.Duration) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return now.Add(d)
}

// each does one change per target, with the lock held, and audits each.
func (s *state) each(c api.Caller, action string, targets []string, d time.Duration, reason string,
	do func(target string) api.Result) []api.Result {
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
func (s *state) Block(c api.Caller, targets []string, d time.Duration, reason string) []api.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.each(c, "block", targets, d, reason, func(t string) api.Result { return s.block(c, t, d, reason) })
}

func (s *state) block(c api.Caller, target string, d time.Duration, reason string) api.Result {
	res := api.Result{Target: target}
	p, ok := parseTarget(&res, d, s.checkBlock)
	if !ok {
		return res
	}
	now := s.now()
	if reason == "" {
		reason = "manual block"
	}
	b := store.Block{Prefix: p, Origin: store.OriginManual, Reason: reason, By: c.String(), Created: now, Expires: expiry(now, d)}
	old, hadOld := s.blocks[p][store.OriginManual]
	if err := s.st.PutBlocks(b); err != nil {
		res.Error = "store: " + err.Error()
		return res
	}
	s.cacheBlock(b)
	if err := s.syncKernel(p); err != nil {
		// Undo, so the store never claims what the kernel does not do.
		if hadOld {
			_ = s.st.PutBlocks(old)
			s.cacheBlock(old)
		} else {
			_, _ = s.st.DeleteBlock(store.OriginManual, p)
			s.uncacheBlock(store.OriginManual, p)
		}
		res.Error = "kernel: " + err.Error()
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if all {
		targets = nil
		for p := range s.blocks {
			targets = append(targets, p.String())
		}
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
	records := maps.Clone(s.blocks[p])
	if len(records) == 0 {
		if path := s.listHolding(p); path != "" {
			res.Error = fmt.Sprintf("%s is listed in %s: remove it there", p, path)
		} else {
			res.Error = fmt.Sprintf("%s is not blocked", p)
		}
		return res
	}
	for origin := range records {
		if _, err := s.st.DeleteBlock(origin, p); err != nil {
			res.Error = "store: " + err.Error()
			return res
		}
		s.uncacheBlock(origin, p)
	}
	if err := s.syncKernel(p); err != nil {
		for _, b := range records {
			_ = s.st.PutBlocks(b)
			s.cacheBlock(b)
		}
		res.Error = "kernel: " + err.Error()
		return res
	}
	now := s.now()
	s.history(store.Change{Time: now, Action: "unblock", Prefix: p, By: c.String()})
	s.publish(&report.Unblock{Time: now, Prefix: p, By: c.String()})
	if path := s.listHolding(p); path != "" {
		res.Error = fmt.Sprintf("unblocked, but %s also lists %s: it stays blocked until removed there", path, p)
		return res
	}
	res.OK = true
	return res
}

// Allow puts each target on the allowlist for d (0: no expiry).
func (s *state) Allow(c api.Caller, targets []string, d time.Duration, reason string) []api.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
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
	old, hadOld := s.allows[p]
	if err := s.st.PutAllows(a); err != nil {
		res.Error = "store: " + err.Error()
		return res
	}
	s.allows[p] = a
	if err := s.syncAllows(); err != nil {
		if hadOld {
			_ = s.st.PutAllows(old)
			s.allows[p] = old
		} else {
			_, _ = s.st.DeleteAllow(store.OriginManual, p)
			delete(s.allows, p)
		}
		_ = s.syncAllows()
		res.Error = "kernel: " + err.Error()
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
	s.mu.Lock()
	defer s.mu.Unlock()
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
	old, ok := s.allows[p]
	if !ok {
		res.Error = fmt.Sprintf("%s is not on the allowlist", p)
		return res
	}
	if _, err := s.st.DeleteAllow(store.OriginManual, p); err != nil {
		res.Error = "store: " + err.Error()
		return res
	}
	delete(s.allows, p)
	if err := s.syncAllows(); err != nil {
		_ = s.st.PutAllows(old)
		s.allows[p] = old
		res.Error = "kernel: " + err.Error()
		return res
	}
	now := s.now()
	s.history(store.Change{Time: now, Action: "disallow", Prefix: p, By: c.String()})
	s.publish(&report.Disallow{Time: now, Prefix: p, By: c.String()})
	res.OK = true
	return res
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
	for p, a := range s.allows {
		if a.Expired(now) {
			continue
		}
		if exp, ok := want[p]; ok && exp.IsZero() {
			continue // a fixed or permanent allow already covers it
		}
		want[p] = a.Expires
	}
	have, err := s.dp.Allows()
	if err != nil {
		return err
	}
	for _, r := range have {
		if _, ok := want[r.Prefix]; !ok {
			if _, err := s.dp.Disallow(r.Prefix); err != nil {
				return err
			}
		}
	}
	for p, exp := range want {
		if err := s.dp.Allow(p, exp); err != nil {
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
	if err := s.dp.Extend(p, longer); err != nil {
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
		b.Ports = append(b.Ports, store.PortSeen{Port: t.Port, Seen: t.Seen})
	}
	if err := s.st.PutBlocks(b); err != nil {
		s.log.Error("cannot record a scan block; the kernel holds it and the next reconciliation retries",
			"src", ev.Src, "err", err)
		return expires, b.Reason
	}
	s.cacheBlock(b)
	s.history(store.Change{Time: ev.Time, Action: "block", Prefix: p, Origin: store.OriginScan, Reason: b.Reason, By: "kernel"})
	return expires, b.Reason
}

func (s *state) history(c store.Change) {
	if err := s.st.Record(c); err != nil {
		s.log.Warn("cannot record history", "err", err)
	}
}

// SetLists sets the lists at start; Reconcile brings the kernel in step.
func (s *state) SetLists(lists []*listSource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists = lists
}

// Lists returns the sources in force.
func (s *state) Lists() []*listSource {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lists)
}

func inLists(ls []*listSource, p netip.Prefix) bool {
	for _, l := range ls {
		if l.list.Has(p) {
			return true
		}
	}
	return false
}

// ReplaceLists puts next in force instead of the lists now, changing in the
// kernel only what differs: an entry added to a list is blocked, an entry
// removed is unblocked unless another decision still holds it. Additions
// come first and are all or nothing, so a full map leaves the lists as
// they were.
func (s *state) ReplaceLists(next []*listSource) (added, removed int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.lists
	s.lists = next
	added, err = s.dp.BlockMany(func(yield func(netip.Prefix) bool) {
		for _, l := range next {
			for p := range l.list.All() {
				if !inLists(prev, p) && !yield(p) {
					return
				}
			}
		}
	}, time.Time{})
	if err != nil {
		s.lists = prev
		return 0, 0, err
	}
	var gone, kept []netip.Prefix
	for _, l := range prev {
		for p := range l.list.All() {
			if inLists(next, p) {
				continue
			}
			if _, ok := s.effective(p); ok {
				kept = append(kept, p) // a manual or scan block remains
			} else {
				gone = append(gone, p)
			}
		}
	}
	removed, err = s.dp.UnblockMany(slices.Values(gone))
	for _, p := range kept {
		err = errors.Join(err, s.syncKernel(p))
	}
	return added, removed, err
}

// SetPolicy changes the rules and the fixed allows (at reload).
func (s *state) SetPolicy(rules policy.Rules, fixed []fixedAllow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules, s.fixed = rules, fixed
	return s.syncAllows()
}

// Checker is the policy check for list entries, with what is protected now.
func (s *state) Checker(rules policy.Rules, fixed []fixedAllow) func(netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return checker(rules, protectedFrom(fixed, maps.Values(s.allows), s.now()))
}

// reconcileStats counts what a reconciliation changed.
type reconcileStats struct {
	Written, Removed, Adopted, Fixed int
}

// Reconcile brings the kernel and the store in step, both ways:
//   - a block the kernel holds that no decision explains is adopted into
//     the store when the kernel made it (a scan while events were lost or no
//     daemon ran), or when recovering a lost store; otherwise it is stale
//     (its decision ended while no daemon ran) and removed;
//   - a decision the kernel lacks (after a reboot) is written to it;
//   - the allowlist is made exact.
func (s *state) Reconcile(recovering bool) (reconcileStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st reconcileStats
	swept, err := s.dp.SweepRules()
	st.Removed += swept.Blocks
	if err != nil {
		return st, err
	}
	if err := s.syncAllows(); err != nil {
		return st, fmt.Errorf("allowlist: %w", err)
	}
	now := s.now()
	var stale []netip.Prefix
	var adopt []store.Block
	type fix struct {
		p   netip.Prefix
		exp time.Time
	}
	var fixes []fix
	present := 0
	err = s.dp.EachBlock(func(r dataplane.Rule) error {
		exp, ok := s.effective(r.Prefix)
		switch {
		case ok:
			present++
			if !sameTime(r.Expires, exp) {
				fixes = append(fixes, fix{r.Prefix, exp})
			}
		case r.Expired(now):
			// Expired since the sweep above: the kernel ignores it.
		case r.Origin == dataplane.OriginScan:
			// Made while no daemon ran or its event was lost: it counts as
			// an offence all the same.
			expires, offence := s.escalate(r.Prefix, r.Created, r.Expires)
			adopt = append(adopt, store.Block{Prefix: r.Prefix, Origin: store.OriginScan, Reason: scanReason(offence),
				By: "kernel", Created: r.Created, Expires: expires})
		case recovering:
			adopt = append(adopt, store.Block{Prefix: r.Prefix, Origin: store.OriginKernel,
				Reason: "found in the kernel when the store was lost", By: "kernel", Created: r.Created, Expires: r.Expires})
		default:
			stale = append(stale, r.Prefix)
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	if len(adopt) > 0 {
		if err := s.st.PutBlocks(adopt...); err != nil {
			return st, fmt.Errorf("store: %w", err)
		}
		for _, b := range adopt {
			s.cacheBlock(b)
			s.history(store.Change{Time: now, Action: "block", Prefix: b.Prefix, Origin: b.Origin, Reason: b.Reason, By: b.By})
		}
		st.Adopted = len(adopt)
		present += len(adopt)
	}
	for _, f := range fixes {
		if err := s.dp.Block(f.p, f.exp); err != nil {
			return st, err
		}
		st.Fixed++
	}
	if len(stale) > 0 {
		n, err := s.dp.UnblockMany(slices.Values(stale))
		st.Removed += n
		if err != nil {
			return st, err
		}
	}

	// What the decisions hold that the kernel lacks.
	if present >= s.desiredCount() {
		return st, nil
	}
	kernelEmpty := present == 0
	// Entries with an expiry are few (lists are permanent): they are
	// written one by one, the permanent ones in bulk.
	var timed []netip.Prefix
	permanent := func(yield func(netip.Prefix) bool) {
		for p, exp := range s.desired() {
			if !kernelEmpty {
				if _, ok, _ := s.dp.LookupBlock(p); ok {
					continue
				}
			}
			if !exp.IsZero() {
				timed = append(timed, p)
				continue
			}
			if !yield(p) {
				return
			}
		}
	}
	n, err := s.dp.BlockMany(permanent, time.Time{})
	st.Written += n
	if err != nil {
		return st, err
	}
	for _, p := range timed {
		exp, _ := s.effective(p)
		if err := s.dp.Block(p, exp); err != nil {
			return st, err
		}
		st.Written++
	}
	return st, nil
}

// desired yields every prefix some live decision blocks, once, with the
// expiry the kernel should hold (zero: never).
func (s *state) desired() iter.Seq2[netip.Prefix, time.Time] {
	return func(yield func(netip.Prefix, time.Time) bool) {
		inLists := func(p netip.Prefix, upto int) bool {
			for _, l := range s.lists[:upto] {
				if l.list.Has(p) {
					return true
				}
			}
			return false
		}
		for i, l := range s.lists {
			for p := range l.list.All() {
				if i > 0 && inLists(p, i) {
					continue
				}
				if !yield(p, time.Time{}) {
					return
				}
			}
		}
		for p := range s.blocks {
			if inLists(p, len(s.lists)) {
				continue
			}
			if exp, ok := s.effective(p); ok && !yield(p, exp) {
				return
			}
		}
	}
}

func (s *state) desiredCount() int {
	n := 0
	for range s.desired() {
		n++
	}
	return n
}

// sameTime compares expiries converted between clocks: a few ms may differ.
func sameTime(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	d := a.Sub(b)
	return d < time.Second && d > -time.Second
}

// Sweep ends the decisions that expired: the store forgets them and the
// history notes them (the kernel already ignores them; Reconcile clears its
// entries). It also clears the scan state of idle sources.
func (s *state) Sweep(window time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var errs []error
	for p, recs := range s.blocks {
		for origin, b := range recs {
			if !b.Expired(now) {
				continue
			}
			if _, err := s.st.DeleteBlock(origin, p); err != nil {
				errs = append(errs, err)
				continue
			}
			s.uncacheBlock(origin, p)
			s.history(store.Change{Time: now, Action: "expire", Prefix: p, Origin: origin, Reason: b.Reason})
		}
	}
	for p, a := range s.allows {
		if a.Expired(now) {
			if _, err := s.st.DeleteAllow(store.OriginManual, p); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(s.allows, p)
			s.history(store.Change{Time: now, Action: "expire", Prefix: p, Origin: store.OriginManual, Reason: "allow"})
		}
	}
	if _, err := s.dp.SweepTrackers(window); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Blocks calls fn for every live block, records first, then list entries.
func (s *state) Blocks(ctx context.Context, fn func(api.Block) error) error {
	s.mu.Lock()
	now := s.now()
	var recs []store.Block
	for _, m := range s.blocks {
		for _, b := range m {
			if !b.Expired(now) {
				recs = append(recs, b)
			}
		}
	}
	lists := slices.Clone(s.lists)
	s.mu.Unlock()

	slices.SortFunc(recs, func(a, b store.Block) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()), cmp.Compare(a.Origin, b.Origin))
	})
	for _, b := range recs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(s.apiBlock(b)); err != nil {
			return err
		}
	}
	for _, l := range lists {
		for p := range l.list.All() {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := api.Block{Prefix: p, Origin: string(store.OriginFile), Reason: "blocklist", Source: l.spec.where}
			if r, ok, _ := s.dp.LookupBlock(p); ok {
				b.Created, b.Packets = r.Created, r.Packets
			}
			if err := fn(b); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *state) apiBlock(b store.Block) api.Block {
	out := api.Block{Prefix: b.Prefix, Origin: string(b.Origin), Reason: b.Reason, By: b.By,
		Created: b.Created, Expires: b.Expires}
	for _, p := range b.Ports {
		out.Ports = append(out.Ports, api.PortSeen{Port: p.Port, Seen: p.Seen})
	}
	if r, ok, _ := s.dp.LookupBlock(b.Prefix); ok {
		out.Packets = r.Packets
	}
	return out
}

// Allows lists the allowlist: fixed entries first.
func (s *state) Allows() []api.Allow {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.Allow
	for _, f := range s.fixed {
		out = append(out, api.Allow{Prefix: f.prefix, Origin: f.origin, Reason: f.why})
	}
	now := s.now()
	for _, a := range s.allows {
		if !a.Expired(now) {
			out = append(out, api.Allow{Prefix: a.Prefix, Origin: string(a.Origin), Reason: a.Reason, By: a.By,
				Created: a.Created, Expires: a.Expires})
		}
	}
	slices.SortStableFunc(out[len(s.fixed):], func(a, b api.Allow) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return out
}

// Why explains what hbf does with addr.
func (s *state) Why(addr netip.Addr) api.Why {
	s.mu.Lock()
	now := s.now()
	var recs []store.Block
	for p, m := range s.blocks {
		if p.Contains(addr) {
			for _, b := range m {
				if !b.Expired(now) {
					recs = append(recs, b)
				}
			}
		}
	}
	lists := slices.Clone(s.lists)
	s.mu.Unlock()

	why := api.Why{Addr: addr}
	for _, b := range recs {
		why.Blocks = append(why.Blocks, s.apiBlock(b))
	}
	for _, l := range lists {
		for _, p := range l.list.Holding(addr) {
			b := api.Block{Prefix: p, Origin: string(store.OriginFile), Reason: "blocklist", Source: l.spec.where}
			if r, ok, _ := s.dp.LookupBlock(p); ok {
				b.Created, b.Packets = r.Created, r.Packets
			}
			why.Blocks = append(why.Blocks, b)
		}
	}
	for _, a := range s.Allows() {
		if a.Prefix.Contains(addr) {
			why.Allows = append(why.Allows, a)
		}
	}
	slices.SortFunc(why.Blocks, func(a, b api.Block) int { return cmp.Compare(b.Prefix.Bits(), a.Prefix.Bits()) })
	switch {
	case len(why.Blocks) > 0 && len(why.Allows) > 0:
		why.Verdict = "allowed-despite-block"
	case len(why.Blocks) > 0:
		why.Verdict = "blocked"
	case len(why.Allows) > 0:
		why.Verdict = "allowed"
	default:
		why.Verdict = "not-blocked"
	}
	return why
}

// counts reports the entries by kind, for status.
func (s *state) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	now := s.now()
	for _, m := range s.blocks {
		for _, b := range m {
			if !b.Expired(now) {
				out["blocks_"+string(b.Origin)]++
			}
		}
	}
	for _, l := range s.lists {
		out["blocks_file"] += l.list.Len()
	}
	out["allows"] = len(s.fixed)
	for _, a := range s.allows {
		if !a.Expired(now) {
			out["allows"]++
		}
	}
	return out
}
