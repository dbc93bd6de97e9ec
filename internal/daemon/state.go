package daemon

import (
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

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
// order: check, store, kernel (commit). A change the kernel refuses is
// undone in the store, so the two never disagree for longer than the
// change takes.
//
// Its methods are cut by concern: the changes in decisions.go, bringing
// kernel and store in step in reconcile.go, what the API reads in
// queries.go.
type state struct {
	mu    sync.Mutex
	k     dataplane.Rules
	st    *store.Store
	rules policy.Rules
	fixed []fixedAllow
	lists []*listSource
	// Caches of the store's records, which are few (lists are not rows).
	blocks map[netip.Prefix]map[store.Origin]store.Block
	allows map[netip.Prefix]store.Allow
	// The fleet's allowlist, as this host applies it (fleetstate.go).
	fleetAllows map[netip.Prefix]store.Allow

	// The escalation of scan blocks, and the first offence's duration.
	esc           policy.Escalation
	blockDuration time.Duration

	audit   *auditLog
	publish func(report.Event)
	log     *slog.Logger
	now     func() time.Time

	// Changes the kernel refused whose undo in the store failed too.
	undoFailures uint64
	// changed is told, under the lock, that the decisions changed: the
	// fleet publishes this host's from them. Never blocks.
	changed func()
}

func newState(k dataplane.Rules, st *store.Store, rules policy.Rules, fixed []fixedAllow,
	audit *auditLog, publish func(report.Event), log *slog.Logger) (*state, error) {
	s := &state{k: k, st: st, rules: rules, fixed: fixed, audit: audit, publish: publish, log: log,
		now: time.Now, blocks: map[netip.Prefix]map[store.Origin]store.Block{}, allows: map[netip.Prefix]store.Allow{},
		fleetAllows: map[netip.Prefix]store.Allow{}, changed: func() {}}
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
		if a.Origin == store.OriginFleetAllow {
			s.fleetAllows[a.Prefix] = a
		} else {
			s.allows[a.Prefix] = a
		}
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
	return protectedFrom(s.fixed, s.allAllows(), s.now())
}

// allAllows yields the allowlist's entries: this host's, then the fleet's.
func (s *state) allAllows() iter.Seq[store.Allow] {
	return func(yield func(store.Allow) bool) {
		for _, m := range []map[netip.Prefix]store.Allow{s.allows, s.fleetAllows} {
			for _, a := range m {
				if !yield(a) {
					return
				}
			}
		}
	}
}

func protectedFrom(fixed []fixedAllow, allows iter.Seq[store.Allow], now time.Time) []policy.Protected {
	var out []policy.Protected
	for _, f := range fixed {
		out = append(out, policy.Protected{Prefix: f.prefix, Why: f.why})
	}
	for a := range allows {
		if !a.Expired(now) {
			why := "on the allowlist"
			if a.Origin == store.OriginFleetAllow {
				why = "on the fleet's allowlist"
			}
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
		return s.k.Block(p, expires)
	}
	_, err := s.k.Unblock(p)
	return err
}

func expiry(now time.Time, d time.Duration) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return now.Add(d)
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
	if err := listsFit(next, s.k.Capacity()); err != nil {
		return 0, 0, err
	}
	prev := s.lists
	s.lists = next
	var decided []netip.Prefix // new to the lists, and blocked for another reason too
	added, err = s.k.BlockMany(func(yield func(netip.Prefix) bool) {
		for _, l := range next {
			for p := range l.list.All() {
				if inLists(prev, p) {
					continue
				}
				if len(s.blocks[p]) > 0 {
					decided = append(decided, p)
				}
				if !yield(p) {
					return
				}
			}
		}
	}, time.Time{})
	if err != nil {
		// What BlockMany wrote is gone again, the entries of other
		// decisions it replaced too: those are written back.
		s.lists = prev
		for _, p := range decided {
			err = errors.Join(err, s.syncKernel(p))
		}
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
	removed, err = s.k.UnblockMany(slices.Values(gone))
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
	return checker(rules, protectedFrom(fixed, s.allAllows(), s.now()))
}
