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
	holders  map[netip.Prefix]holders              // who publishes each prefix
	unblocks map[netip.Prefix]Unblock
	// expiries are the blocks' ends by the second they are over in,
	// looked at up to looked: the once-a-second look decides again only
	// what ended.
	expiries map[int64][]Ref
	looked   int64
	policy   uint64 // the generation of the check last decided with; 0: none yet
	// again and fresh are decide's lists, kept for the next: a member
	// decides ten blocks at a time, a hundred thousand times a minute.
	again, fresh []Applied
}

// holder is a node that publishes a prefix, and whether its block is a
// live scan report, which counts toward --fleet-min-reporters.
type holder struct {
	origin  string
	reports bool
}

// holders are the holders of one prefix: nearly always one, kept inline.
type holders struct {
	first holder
	more  []holder
}

func (hs *holders) all(yield func(*holder) bool) {
	if hs.first.origin != "" && !yield(&hs.first) {
		return
	}
	for i := range hs.more {
		if !yield(&hs.more[i]) {
			return
		}
	}
}

// find returns origin's entry, or nil.
func (hs *holders) find(origin string) *holder {
	for h := range hs.all {
		if h.origin == origin {
			return h
		}
	}
	return nil
}

func (hs *holders) add(h holder) {
	if hs.first.origin == "" {
		hs.first = h
	} else {
		hs.more = append(hs.more, h)
	}
}

func (hs *holders) remove(origin string) {
	if hs.first.origin == origin {
		hs.first = holder{}
		if len(hs.more) > 0 {
			hs.first, hs.more = hs.more[0], hs.more[1:]
		}
		return
	}
	hs.more = slices.DeleteFunc(hs.more, func(h holder) bool { return h.origin == origin })
}

func (hs *holders) empty() bool { return hs.first.origin == "" }

// NewReceiver returns a receiver for the node self.
func NewReceiver(self string, limits Limits) *Receiver {
	return &Receiver{self: self, limits: limits, applied: map[string]map[netip.Prefix]time.Time{},
		spent: map[string][]time.Time{}, refused: map[Ref]string{}, pending: map[Ref]struct{}{},
		waiting: map[string]map[netip.Prefix]struct{}{}, holders: map[netip.Prefix]holders{}, expiries: map[int64][]Ref{}}
}

// Known tells the receiver that origin's block of p was applied here since
// first, before it started: it is not new, and spends no budget.
func (r *Receiver) Known(origin string, p netip.Prefix, first time.Time) {
	if r.applied[origin] == nil {
		r.applied[origin] = map[netip.Prefix]time.Time{}
	}
	r.applied[origin][p] = first
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
	dirty := make(map[Ref]bool, len(c.Blocks)) // true: its value changed
	mark := func(ref Ref) {
		if _, ok := dirty[ref]; !ok {
			dirty[ref] = false
		}
	}
	markPrefix := func(p netip.Prefix) {
		hs := r.holders[p]
		for h := range hs.all {
			mark(Ref{h.origin, p})
		}
	}
	if c.Whole {
		for p := range r.holders {
			markPrefix(p)
		}
		for origin, ps := range r.applied {
			for p := range ps {
				mark(Ref{origin, p})
			}
		}
		r.holders, r.expiries = map[netip.Prefix]holders{}, map[int64][]Ref{}
	}
	if c.Unblocks != nil {
		for p, u := range c.Unblocks {
			if old, ok := r.unblocks[p]; !ok || !old.At.Equal(u.At) {
				markPrefix(p)
			}
		}
		for p := range r.unblocks {
			if _, ok := c.Unblocks[p]; !ok {
				markPrefix(p)
			}
		}
		r.unblocks = c.Unblocks
	}
	for _, ref := range c.Blocks {
		b, ok := block(ref)
		if r.hold(ref, b, ok, now) {
			markPrefix(ref.Prefix)
		}
		dirty[ref] = true
	}
	for _, ref := range r.expired(now) {
		if b, ok := block(ref); ok && b.Expired(now) { // not published again since
			if r.hold(ref, b, true, now) {
				markPrefix(ref.Prefix)
			}
			mark(ref)
		}
	}
	if pol.Generation != r.policy {
		r.policy = pol.Generation
		for p := range r.holders {
			markPrefix(p)
		}
	}
	for origin, ps := range r.waiting {
		if r.over(origin, now) == "" {
			for p := range ps {
				mark(Ref{origin, p})
			}
		}
	}
	return r.decide(dirty, block, pol.Check, now)
}

// hold notes origin's block of a prefix as the view holds it now (ok:
// it exists), and reports whether the prefix's reporters changed.
func (r *Receiver) hold(ref Ref, b Block, ok bool, now time.Time) bool {
	hs := r.holders[ref.Prefix]
	h := hs.find(ref.Origin)
	was := h != nil && h.reports
	reports := ok && b.Origin == "scan" && !b.Expired(now)
	switch {
	case !ok && h != nil:
		hs.remove(ref.Origin)
	case ok && h == nil:
		hs.add(holder{origin: ref.Origin, reports: reports})
	case ok:
		h.reports = reports
	}
	if hs.empty() {
		delete(r.holders, ref.Prefix)
	} else {
		r.holders[ref.Prefix] = hs
	}
	if ok && !b.ExpiresAt.IsZero() && b.ExpiresAt.After(now) {
		// In the bucket of the second it is over by: looked at once
		// now has reached it.
		sec := b.ExpiresAt.Unix()
		if b.ExpiresAt.Nanosecond() > 0 {
			sec++
		}
		r.expiries[sec] = append(r.expiries[sec], ref)
	}
	return reports != was
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

// reporters counts the live scan reports of p.
func (r *Receiver) reporters(p netip.Prefix) int {
	n := 0
	hs := r.holders[p]
	for h := range hs.all {
		if h.reports {
			n++
		}
	}
	return n
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
		case b.Origin == "scan" && r.reporters(ref.Prefix) < max(r.limits.MinReporters, 1):
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
	// and budget last.
	slices.SortFunc(fresh, func(a, b Applied) int {
		return cmp.Or(cmp.Compare(a.Origin, b.Origin), a.Block.Created.Compare(b.Block.Created),
			a.Block.Prefix.Addr().Compare(b.Block.Prefix.Addr()))
	})
	for _, a := range fresh {
		ref := Ref{a.Origin, a.Block.Prefix}
		if reason := r.spend(a.Origin, now); reason != "" {
			r.count(&d, ref, reason)
			r.wait(ref)
			continue
		}
		delete(r.refused, ref)
		if r.applied[a.Origin] == nil {
			r.applied[a.Origin] = map[netip.Prefix]time.Time{}
		}
		r.applied[a.Origin][ref.Prefix] = now
		d.Apply = append(d.Apply, a)
		d.fresh++
	}
	r.again, r.fresh = scratch(again), scratch(fresh)
	d.Pending = len(r.pending)
	for _, ps := range r.applied {
		d.Applied += len(ps)
	}
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
