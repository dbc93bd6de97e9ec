package fleet

import (
	"net/netip"
	"slices"
	"time"
)

// Who holds each prefix: a scan block waits for --fleet-min-reporters
// nodes to report its source, so a receiver that counts them keeps, for
// each prefix, the nodes that publish it and whether each is a live
// scan report.

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

// counting says whether scan blocks wait for more reporters: only then
// does the receiver keep who holds each prefix.
func (r *Receiver) counting() bool { return r.limits.MinReporters > 1 }

// hold notes origin's block of a prefix as the view holds it now (ok: it
// exists) and when it is over, and marks the prefix's blocks when its
// reporters changed.
func (r *Receiver) hold(ref Ref, b Block, ok bool, now time.Time, mark func(Ref)) {
	if ok {
		r.expire(ref, b, now)
	}
	if !r.counting() {
		if _, known := r.origins[ref.Origin]; !known {
			r.origins[ref.Origin] = struct{}{}
		}
		return
	}
	hs := r.holders[ref.Prefix]
	h := hs.find(ref.Origin)
	was := h != nil && h.reports
	reports := ok && b.Detected() && !b.Expired(now)
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
	if reports != was {
		r.markPrefix(ref.Prefix, mark)
	}
}

// markPrefix marks the blocks of p, every node's.
func (r *Receiver) markPrefix(p netip.Prefix, mark func(Ref)) {
	if r.counting() {
		hs := r.holders[p]
		for h := range hs.all {
			mark(Ref{h.origin, p})
		}
		return
	}
	for origin := range r.origins {
		mark(Ref{origin, p}) // one it does not hold decides nothing
	}
}

// markAll marks every block the receiver knows of: those it holds when
// counting reporters; else those it applied, refused, or keeps waiting,
// which are all a new policy can change.
func (r *Receiver) markAll(mark func(Ref)) {
	for p := range r.holders {
		r.markPrefix(p, mark)
	}
	for origin, ps := range r.applied {
		for p := range ps {
			mark(Ref{origin, p})
		}
	}
	for ref := range r.refused {
		mark(ref)
	}
	for ref := range r.pending {
		mark(ref)
	}
	for origin, ps := range r.waiting {
		for p := range ps {
			mark(Ref{origin, p})
		}
	}
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
