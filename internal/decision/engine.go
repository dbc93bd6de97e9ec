// Package decision is hbf's decision engine: it owns every block and
// allow and why it exists — who made it, when it ends, what a scan showed
// — and keeps three things in step with them: the store, which remembers
// them across restarts; the kernel's maps, which enforce them; and the
// protected set (internal/protect), which no block may touch and which the
// kernel's allowlist holds.
//
// Every source of decisions goes through one Engine: the kernel's scan
// blocks (OnScan), the operator (Block, Unblock, Allow, Disallow), the
// lists (ReplaceLists) and the fleet (SetFleet, EndByFleet,
// SetFleetAllows). Each change is checked, stored, then written to the
// kernel, and undone in the store when the kernel refuses it. Reconcile
// brings store and kernel in step both ways after a restart or lost
// events.
//
// The engine knows nothing of the daemon around it: it is tested without
// root against kerneltest.Fake, which kerneltest.Run holds to the kernel's
// behaviour.
package decision

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/protect"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/sources"
	"github.com/hbf-firewall/hbf/internal/store"
)

// Config is what an Engine works with.
type Config struct {
	Kernel dataplane.Rules
	Store  *store.Store
	Rules  policy.Rules
	// Protected is what is never blocked besides the allowlist, which the
	// engine keeps itself (protect.Host, Flags, Etcd, Members …).
	Protected []protect.Entry
	Audit     *Audit
	// Publish reports a change as an event line.
	Publish func(report.Event)
	Log     *slog.Logger
	// Explain adds to an error the setting an operator changes for it: the
	// daemon knows the flags, the engine does not. Nil: errors as they are.
	Explain func(error) error
	Now     func() time.Time // nil: time.Now
}

// Engine owns the decisions and keeps the store, the kernel's maps, the
// protected set and the lists in step. Every change goes through it, under
// its lock, in this order: check, store, kernel (commit). A change the
// kernel refuses is undone in the store, so the two never disagree for
// longer than the change takes.
//
// Its methods are cut by concern: the changes in changes.go, bringing
// kernel and store in step in reconcile.go, the fleet's in fleet.go, what
// the API reads in queries.go.
type Engine struct {
	mu    sync.Mutex
	k     dataplane.Rules
	st    *store.Store
	rules policy.Rules
	lists []*sources.Source
	// Caches of the store's records, which are few (lists are not rows).
	blocks map[netip.Prefix]map[store.Origin]store.Block
	allows map[netip.Prefix]store.Allow
	// The fleet's allowlist, as this host applies it (fleet.go).
	fleetAllows map[netip.Prefix]store.Allow
	// The prefixes blocked, counted as they change so that a metrics scrape
	// costs the same with one block or a million: those the lists hold,
	// and those only records of e.blocks hold.
	listed, decided int

	// base is the protected set but the allowlist; protected is all of it.
	base      []protect.Entry
	protected *protect.Set
	// policy moves each time the rules or the protected set change: the
	// fleet's receiver decides every block again then.
	policy uint64
	// unenforced counts, by kind, the protected entries the kernel's
	// allowlist has no room for.
	unenforced map[protect.Kind]int

	// The escalation of scan blocks, and the first offence's duration.
	esc           policy.Escalation
	blockDuration time.Duration

	audit   *Audit
	publish func(report.Event)
	log     *slog.Logger
	explain func(error) error
	now     func() time.Time

	// Changes the kernel refused whose undo in the store failed too.
	undoFailures uint64
	// changed is told, under the lock, that the decisions changed: the
	// fleet publishes this host's from them. Never blocks.
	changed func()
}

// New returns an engine over the store's decisions. It writes nothing to
// the kernel: Reconcile does, once the lists are set.
func New(cfg Config) (*Engine, error) {
	e := &Engine{k: cfg.Kernel, st: cfg.Store, rules: cfg.Rules, base: cfg.Protected, audit: cfg.Audit,
		publish: cfg.Publish, log: cfg.Log, explain: cfg.Explain, now: cfg.Now, changed: func() {},
		blocks: map[netip.Prefix]map[store.Origin]store.Block{}, allows: map[netip.Prefix]store.Allow{},
		fleetAllows: map[netip.Prefix]store.Allow{}}
	if e.now == nil {
		e.now = time.Now
	}
	if e.explain == nil {
		e.explain = func(err error) error { return err }
	}
	blocks, err := e.st.Blocks()
	if err != nil {
		return nil, fmt.Errorf("read the store: %w", err)
	}
	for _, b := range blocks {
		e.cacheBlock(b)
	}
	allows, err := e.st.Allows()
	if err != nil {
		return nil, fmt.Errorf("read the store: %w", err)
	}
	for _, a := range allows {
		if a.Origin == store.OriginFleetAllow {
			e.fleetAllows[a.Prefix] = a
		} else {
			e.allows[a.Prefix] = a
		}
	}
	e.protected = e.protectedWith(e.base)
	return e, nil
}

// OnChange sets what is told, under the engine's lock, that this host's
// decisions changed: the fleet publishes them. It must never block.
func (e *Engine) OnChange(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.changed = fn
}

// Now is the engine's clock.
func (e *Engine) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now()
}

// SetClock makes now the engine's clock (tests move it).
func (e *Engine) SetClock(now func() time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = now
}

func (e *Engine) cacheBlock(b store.Block) {
	m := e.blocks[b.Prefix]
	if m == nil {
		m = map[store.Origin]store.Block{}
		e.blocks[b.Prefix] = m
		e.counted(b.Prefix, true)
	}
	m[b.Origin] = b
}

func (e *Engine) uncacheBlock(origin store.Origin, p netip.Prefix) {
	delete(e.blocks[p], origin)
	if m, ok := e.blocks[p]; ok && len(m) == 0 {
		delete(e.blocks, p)
		e.counted(p, false)
	}
}

// counted tells the count in force that p gained its first record (true)
// or lost its last one.
func (e *Engine) counted(p netip.Prefix, held bool) {
	switch {
	case inLists(e.lists, p):
	case held:
		e.decided++
	default:
		e.decided--
	}
}

// recount counts the prefixes in force again, after the lists changed.
// One list costs nothing: a list holds each entry once.
func (e *Engine) recount() {
	e.listed, e.decided = 0, 0
	for i, l := range e.lists {
		if i == 0 {
			e.listed += l.List.Len()
			continue
		}
		for p := range l.List.All() {
			if !inLists(e.lists[:i], p) {
				e.listed++
			}
		}
	}
	for p := range e.blocks {
		if !inLists(e.lists, p) {
			e.decided++
		}
	}
}

// InForce counts the prefixes blocked (addresses and ranges), as the
// engine knows them: kept as decisions change, not read from the kernel.
// Expired decisions leave it at the next sweep; a scan block the kernel
// made whose event was lost joins it at the next reconciliation.
func (e *Engine) InForce() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.listed + e.decided
}

// protectedWith is the protected set of base and the allowlist's live
// entries.
func (e *Engine) protectedWith(base []protect.Entry) *protect.Set {
	var allows []store.Allow
	for _, m := range []map[netip.Prefix]store.Allow{e.allows, e.fleetAllows} {
		for _, a := range m {
			allows = append(allows, a)
		}
	}
	return protect.NewSet(base, AllowEntries(allows, e.now()))
}

// AllowEntries are the protected entries of the allowlist's records live
// at now: this host's (hbf allow), and the fleet's.
func AllowEntries(allows []store.Allow, now time.Time) []protect.Entry {
	var out []protect.Entry
	for _, a := range allows {
		if a.Expired(now) {
			continue
		}
		kind, why := protect.KindAllow, "on the allowlist"
		if a.Origin == store.OriginFleetAllow {
			kind, why = protect.KindFleetAllow, "on the fleet's allowlist"
		}
		if a.Reason != "" {
			why += " (" + a.Reason + ")"
		}
		out = append(out, protect.Entry{Prefix: a.Prefix, Kind: kind, Why: why, Reason: a.Reason, By: a.By,
			Created: a.Created, Expires: a.Expires})
	}
	return out
}

// Checker is the policy check of blocks under rules with what set
// protects: a block too wide, or one that touches a protected entry, is
// refused, saying why; explain (nil: none) adds the setting to change.
func Checker(rules policy.Rules, set *protect.Set, explain func(error) error) func(netip.Prefix) error {
	return func(p netip.Prefix) error {
		if err := rules.CheckBlock(p); err != nil {
			if explain != nil {
				err = explain(err)
			}
			return err
		}
		return set.Check(p)
	}
}

// checkBlock is the policy check for a block of p now.
func (e *Engine) checkBlock(p netip.Prefix) error { return Checker(e.rules, e.protected, e.explain)(p) }

// BlockChecker is the policy check for blocks as it stands now, and its
// generation: what a source of blocks outside the engine (the fleet's
// receiver) decides a batch with, deciding everything again when the
// generation moved. The protected set is never changed in place, so the
// check needs no lock.
func (e *Engine) BlockChecker() (check func(netip.Prefix) error, generation uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Checker(e.rules, e.protected, e.explain), e.policy
}

// Checker is the policy check for list entries under rules, with base
// protected besides the allowlist: what a reload checks its lists with
// before it puts them in force.
func (e *Engine) Checker(rules policy.Rules, base []protect.Entry) func(netip.Prefix) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Checker(rules, e.protectedWith(base), e.explain)
}

// SetPolicy changes the rules and what is protected besides the
// allowlist, and brings the kernel's allowlist in step.
func (e *Engine) SetPolicy(rules policy.Rules, base []protect.Entry) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if rules != e.rules {
		e.policy++
	}
	e.rules, e.base = rules, base
	return e.syncAllows()
}

// listHolding names the list that holds exactly p, or "".
func (e *Engine) listHolding(p netip.Prefix) string {
	for _, l := range e.lists {
		if l.List.Has(p) {
			return l.Spec.Where
		}
	}
	return ""
}

// effective is what the kernel should hold for p: the latest expiry of
// every live decision on p (zero: never), and whether there is any.
func (e *Engine) effective(p netip.Prefix) (time.Time, bool) {
	if e.listHolding(p) != "" {
		return time.Time{}, true
	}
	now := e.now()
	var expires time.Time
	found := false
	for _, b := range e.blocks[p] {
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
func (e *Engine) syncKernel(p netip.Prefix) error {
	if expires, ok := e.effective(p); ok {
		return e.k.Block(p, expires)
	}
	_, err := e.k.Unblock(p)
	return err
}

// Expiry is when a decision made at now for d ends; d 0: never (zero).
func Expiry(now time.Time, d time.Duration) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return now.Add(d)
}

func (e *Engine) history(c store.Change) {
	if err := e.st.Record(c); err != nil {
		e.log.Warn("cannot record history", "err", err)
	}
}

// SetLists sets the lists at start; Reconcile brings the kernel in step.
func (e *Engine) SetLists(lists []*sources.Source) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lists = lists
	e.recount()
}

// Lists returns the lists in force.
func (e *Engine) Lists() []*sources.Source {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.lists)
}

func inLists(ls []*sources.Source, p netip.Prefix) bool {
	for _, l := range ls {
		if l.List.Has(p) {
			return true
		}
	}
	return false
}

// ReplaceLists puts next in force instead of the lists now, changing in the
// kernel only what differs: an entry added to a list is blocked, an entry
// removed is unblocked unless another decision still holds it. Additions
// come first and are all or nothing, so a full map leaves the lists as
// they were. Lists that do not fit in the room the kernel keeps for them
// are refused whole (*ListsTooBigError).
func (e *Engine) ReplaceLists(next []*sources.Source) (added, removed int, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ListsFit(next, e.k.Capacity()); err != nil {
		return 0, 0, e.explain(err)
	}
	prev := e.lists
	e.lists = next
	defer e.recount()
	var decided []netip.Prefix // new to the lists, and blocked for another reason too
	added, err = e.k.BlockMany(dataplane.Forever(func(yield func(netip.Prefix) bool) {
		for _, l := range next {
			for p := range l.List.All() {
				if inLists(prev, p) {
					continue
				}
				if len(e.blocks[p]) > 0 {
					decided = append(decided, p)
				}
				if !yield(p) {
					return
				}
			}
		}
	}))
	if err != nil {
		// What BlockMany wrote is gone again, the entries of other
		// decisions it replaced too: those are written back.
		e.lists = prev
		for _, p := range decided {
			err = errors.Join(err, e.syncKernel(p))
		}
		return 0, 0, err
	}
	var gone, kept []netip.Prefix
	for _, l := range prev {
		for p := range l.List.All() {
			if inLists(next, p) {
				continue
			}
			if _, ok := e.effective(p); ok {
				kept = append(kept, p) // a manual or scan block remains
			} else {
				gone = append(gone, p)
			}
		}
	}
	removed, err = e.k.UnblockMany(slices.Values(gone))
	for _, p := range kept {
		err = errors.Join(err, e.syncKernel(p))
	}
	return added, removed, err
}

// Protected counts the protected entries by kind, and those the kernel's
// allowlist has no room for: they are never blocked by a decision, but the
// kernel does not exempt them from a scan block.
func (e *Engine) Protected() (entries, unenforced map[protect.Kind]int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	entries = map[protect.Kind]int{}
	for _, en := range e.protected.Entries() {
		entries[en.Kind]++
	}
	return entries, maps.Clone(e.unenforced)
}
