package fleet

import (
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/hbf-firewall/hbf/internal/policy"
)

// Why a block of another node is not applied here, besides the reasons a
// value is refused when read.
const (
	RejectProtected   = "protected"    // this host never blocks it: its own, its allowlist, a member, etcd
	RejectTooWide     = "too_wide"     // wider than this host's --min-prefix-*
	RejectRateLimited = "rate_limited" // past --fleet-accept-per-minute of its origin, for now
	RejectQuota       = "quota"        // its origin holds its quota of entries here
)

// RejectReasons are every reason an entry is not applied, for metrics
// that show each from the start.
var RejectReasons = []string{RejectNotJSON, RejectBadPack, RejectVersion, RejectPrefix, RejectMismatch, RejectOutside, RejectExpired,
	RejectProtected, RejectTooWide, RejectRateLimited, RejectQuota}

// Ops are the operations with etcd whose failures a node counts.
var Ops = []string{"member", "read", "watch", "publish"}

// Limits bound what one origin can make this host apply: scan sources can
// be forged, and sharing turns a forged scan into a fleet-wide block.
type Limits struct {
	// MinReporters applies a scan block only once this many nodes report
	// the source; a manual block needs one.
	MinReporters int
	// PerMinute bounds the entries of one origin applied a minute; 0: no
	// bound.
	PerMinute int
	// Quota bounds the entries of one origin in force here; 0: no bound.
	Quota int
}

// Applied is a block of another node this host applies.
type Applied struct {
	Origin string // the publishing node
	Block  Block
}

// Receiver decides which of the fleet's blocks this host applies. It
// follows the view by its changes, and decides again only what a change
// touched: the blocks changed, those of a prefix whose reporters changed,
// those expired, those waiting for their origin's budget when it refills,
// and all of them only when this host's policy changed. It remembers
// what it applied, so that an origin's budget is spent by new entries
// only, and what it refused, so that each refusal counts once.
type Receiver struct {
	self   string
	limits Limits

	applied  map[string]map[netip.Prefix]time.Time // by origin: when first applied
	spent    map[string][]time.Time                // by origin: applications in the last minute
	refused  map[Ref]string                        // the reason last counted
	pending  map[Ref]struct{}                      // scan blocks waiting for more reporters
	waiting  map[string]map[netip.Prefix]struct{}  // by origin: refused for its budget, tried as it refills
	holders  map[netip.Prefix]holders              // who publishes each prefix, when counting reporters
	origins  map[string]struct{}                   // the nodes that publish, when not
	inForce  int                                   // the blocks applied
	unblocks map[netip.Prefix]Unblock
	// expiries are the blocks' ends by the second they are over in,
	// looked at up to looked: the once-a-second look decides again only
	// what ended.
	expiries map[int64][]Ref
	looked   int64
	policy   uint64 // the generation of the check last decided with; 0: none yet
	// dirty, again and fresh are a decision's work, kept for the next: a
	// member decides ten blocks at a time, a hundred thousand times a
	// minute.
	dirty        map[Ref]bool
	again, fresh []Applied
}

// NewReceiver returns a receiver for the node self.
func NewReceiver(self string, limits Limits) *Receiver {
	return &Receiver{self: self, limits: limits, applied: map[string]map[netip.Prefix]time.Time{},
		spent: map[string][]time.Time{}, refused: map[Ref]string{}, pending: map[Ref]struct{}{},
		waiting: map[string]map[netip.Prefix]struct{}{}, holders: map[netip.Prefix]holders{}, origins: map[string]struct{}{},
		expiries: map[int64][]Ref{}, dirty: map[Ref]bool{}}
}

// Known tells the receiver that origin's block of p was applied here since
// first, before it started: it is not new, and spends no budget.
func (r *Receiver) Known(origin string, p netip.Prefix, first time.Time) {
	r.apply(Ref{origin, p}, first)
}

// apply notes ref applied since first.
func (r *Receiver) apply(ref Ref, first time.Time) {
	ps := r.applied[ref.Origin]
	if ps == nil {
		ps = map[netip.Prefix]time.Time{}
		r.applied[ref.Origin] = ps
	}
	if _, had := ps[ref.Prefix]; !had {
		r.inForce++
	}
	ps[ref.Prefix] = first
}

// Decision is what a receiver decided after changes: what to apply or
// apply again (its value changed), and what to apply no more.
type Decision struct {
	Apply  []Applied
	Remove []Ref
	fresh  int // the last of Apply are new
	// Refused counts the refusals not counted before, by reason; nil
	// when there are none.
	Refused map[string]int
	// Pending are scan blocks waiting for more reporters; Applied the
	// blocks applied here, both after the decision.
	Pending, Applied int
}

// New are the entries of Apply this host did not apply before.
func (d Decision) New() []Applied { return d.Apply[len(d.Apply)-d.fresh:] }

// Policy is this host's check of a block of a prefix (policy.TooWideError
// when too wide), and its generation: a new generation decides every
// block again.
type Policy struct {
	Check      func(netip.Prefix) error
	Generation uint64
}

// Update follows c and decides again what it touched at now; block reads
// a block of the view as it is now (Node.Block).
func (r *Receiver) Update(c Changes, block func(Ref) (Block, bool), pol Policy, now time.Time) Decision {
	dirty := r.dirty // true: its value changed
	mark := func(ref Ref) {
		if _, ok := dirty[ref]; !ok {
			dirty[ref] = false
		}
	}
	if c.Whole {
		r.markAll(mark)
		r.holders, r.origins, r.expiries = map[netip.Prefix]holders{}, map[string]struct{}{}, map[int64][]Ref{}
	}
	if c.Unblocks != nil {
		for p, u := range c.Unblocks {
			if old, ok := r.unblocks[p]; !ok || !old.At.Equal(u.At) {
				r.markPrefix(p, mark)
			}
		}
		for p := range r.unblocks {
			if _, ok := c.Unblocks[p]; !ok {
				r.markPrefix(p, mark)
			}
		}
		r.unblocks = c.Unblocks
	}
	for _, ref := range c.Blocks {
		b, ok := block(ref)
		r.hold(ref, b, ok, now, mark)
		dirty[ref] = true
	}
	for _, ref := range r.expired(now) {
		if b, ok := block(ref); ok && b.Expired(now) { // not published again since
			r.hold(ref, b, true, now, mark)
			mark(ref)
		}
	}
	if pol.Generation != r.policy {
		r.policy = pol.Generation
		r.markAll(mark)
	}
	for origin, ps := range r.waiting {
		if r.over(origin, now) == "" {
			for p := range ps {
				mark(Ref{origin, p})
			}
		}
	}
	d := r.decide(dirty, block, pol.Check, now)
	if len(dirty) > 1024 { // a whole read's: not iterated again at its size
		r.dirty = map[Ref]bool{}
	} else {
		clear(dirty)
	}
	return d
}

// expire notes when b, ref's block, is over: in the bucket of the second
// it is over by, looked at once now has reached it.
func (r *Receiver) expire(ref Ref, b Block, now time.Time) {
	if b.ExpiresAt.IsZero() || !b.ExpiresAt.After(now) {
		return
	}
	sec := b.ExpiresAt.Unix()
	if b.ExpiresAt.Nanosecond() > 0 {
		sec++
	}
	r.expiries[sec] = append(r.expiries[sec], ref)
}

// expired takes the blocks whose seconds are over by now: one bucket a
// second as time goes, or those due when a clock jumped far ahead.
func (r *Receiver) expired(now time.Time) []Ref {
	var out []Ref
	if r.looked == 0 || now.Unix()-r.looked > int64(len(r.expiries)) {
		for sec, refs := range r.expiries {
			if sec <= now.Unix() {
				out = append(out, refs...)
				delete(r.expiries, sec)
			}
		}
	} else {
		for sec := r.looked + 1; sec <= now.Unix(); sec++ {
			out = append(out, r.expiries[sec]...)
			delete(r.expiries, sec)
		}
	}
	r.looked = now.Unix()
	return out
}

// decide decides the blocks named, true for those whose value changed.
func (r *Receiver) decide(refs map[Ref]bool, block func(Ref) (Block, bool), check func(netip.Prefix) error, now time.Time) Decision {
	var d Decision
	again, fresh := r.again[:0], r.fresh[:0]
	for ref, changed := range refs {
		if ref.Origin == r.self {
			continue
		}
		delete(r.pending, ref)
		r.unwait(ref)
		b, ok := block(ref)
		_, known := r.applied[ref.Origin][ref.Prefix]
		u, unblocked := r.unblocks[ref.Prefix]
		switch {
		case !ok || b.Expired(now) || unblocked && u.Ends(b):
			delete(r.refused, ref)
			r.unapply(&d, ref, known)
			continue
		case b.Detected() && r.counting() && r.reporters(ref.Prefix) < r.limits.MinReporters:
			r.pending[ref] = struct{}{}
			r.unapply(&d, ref, known)
			continue
		}
		if err := check(ref.Prefix); err != nil {
			reason := RejectProtected
			if _, wide := errors.AsType[*policy.TooWideError](err); wide {
				reason = RejectTooWide
			}
			r.count(&d, ref, reason)
			r.unapply(&d, ref, known)
			continue
		}
		delete(r.refused, ref)
		switch {
		case !known:
			fresh = append(fresh, Applied{Origin: ref.Origin, Block: b})
		case changed:
			again = append(again, Applied{Origin: ref.Origin, Block: b})
		}
	}
	d.Apply = append(make([]Applied, 0, len(again)+len(fresh)), again...)
	// New entries in the order they were made, while the origin's quota
	// and budget last; in any order when nothing bounds them.
	if r.limits.PerMinute > 0 || r.limits.Quota > 0 {
		slices.SortFunc(fresh, func(a, b Applied) int {
			return cmp.Or(cmp.Compare(a.Origin, b.Origin), a.Block.Created.Compare(b.Block.Created),
				a.Block.Prefix.Addr().Compare(b.Block.Prefix.Addr()))
		})
	}
	for _, a := range fresh {
		ref := Ref{a.Origin, a.Block.Prefix}
		if reason := r.spend(a.Origin, now); reason != "" {
			r.count(&d, ref, reason)
			r.wait(ref)
			continue
		}
		delete(r.refused, ref)
		r.apply(ref, now)
		d.Apply = append(d.Apply, a)
		d.fresh++
	}
	r.again, r.fresh = scratch(again), scratch(fresh)
	d.Pending, d.Applied = len(r.pending), r.inForce
	return d
}

// scratch keeps a list's room for the next use, unless a whole read
// made it large.
func scratch(list []Applied) []Applied {
	if cap(list) > 1024 {
		return nil
	}
	clear(list) // no blocks kept alive
	return list[:0]
}

// unapply stops applying ref, when it was.
func (r *Receiver) unapply(d *Decision, ref Ref, known bool) {
	if !known {
		return
	}
	delete(r.applied[ref.Origin], ref.Prefix)
	r.inForce--
	if len(r.applied[ref.Origin]) == 0 {
		delete(r.applied, ref.Origin)
	}
	d.Remove = append(d.Remove, ref)
}

func (r *Receiver) wait(ref Ref) {
	if r.waiting[ref.Origin] == nil {
		r.waiting[ref.Origin] = map[netip.Prefix]struct{}{}
	}
	r.waiting[ref.Origin][ref.Prefix] = struct{}{}
}

func (r *Receiver) unwait(ref Ref) {
	if w := r.waiting[ref.Origin]; w != nil {
		delete(w, ref.Prefix)
		if len(w) == 0 {
			delete(r.waiting, ref.Origin)
		}
	}
}

// over says why origin cannot have one more entry now, or "" when it can.
func (r *Receiver) over(origin string, now time.Time) string {
	if r.limits.Quota > 0 && len(r.applied[origin]) >= r.limits.Quota {
		return RejectQuota
	}
	if r.limits.PerMinute > 0 {
		r.spent[origin] = slices.DeleteFunc(r.spent[origin], func(at time.Time) bool { return now.Sub(at) >= time.Minute })
		if len(r.spent[origin]) >= r.limits.PerMinute {
			return RejectRateLimited
		}
	}
	return ""
}

// spend spends one entry of origin's budget now, or says why it cannot.
func (r *Receiver) spend(origin string, now time.Time) string {
	reason := r.over(origin, now)
	if reason == "" && r.limits.PerMinute > 0 {
		r.spent[origin] = append(r.spent[origin], now)
	}
	return reason
}

// count counts a refusal once per block and reason.
func (r *Receiver) count(d *Decision, ref Ref, reason string) {
	if r.refused[ref] == reason {
		return
	}
	r.refused[ref] = reason
	if d.Refused == nil {
		d.Refused = map[string]int{}
	}
	d.Refused[reason]++
}
