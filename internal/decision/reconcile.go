package decision

import (
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/store"
)

// ReconcileStats counts what a reconciliation changed.
type ReconcileStats struct {
	Written, Removed, Adopted, Fixed int
}

// Reconcile brings the kernel and the store in step, both ways:
//   - a block the kernel holds that no decision explains is adopted into
//     the store when the kernel made it (a scan while events were lost or no
//     daemon ran), or when recovering a lost store; otherwise it is stale
//     (its decision ended while no daemon ran) and removed;
//   - a decision the kernel lacks (after a reboot) is written to it;
//   - the allowlist is made exact.
func (e *Engine) Reconcile(recovering bool) (ReconcileStats, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var st ReconcileStats
	swept, err := e.k.SweepRules()
	st.Removed += swept.Blocks
	if err != nil {
		return st, err
	}
	if err := e.syncAllows(); err != nil {
		return st, fmt.Errorf("allowlist: %w", err)
	}
	now := e.now()
	var stale []netip.Prefix
	var adopt []store.Block
	type fix struct {
		p   netip.Prefix
		exp time.Time
	}
	var fixes []fix
	present := 0
	err = e.k.EachBlock(func(r dataplane.Rule) error {
		exp, ok := e.effective(r.Prefix)
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
			expires, offence := e.escalate(r.Prefix, r.Created, r.Expires)
			adopt = append(adopt, store.Block{Prefix: r.Prefix, Origin: store.OriginScan, Reason: scanReason(offence),
				By: "kernel", Created: r.Created, Expires: expires})
		case r.Origin == dataplane.OriginLimit:
			// Which port's limit is not in the rule: its event was lost.
			adopt = append(adopt, store.Block{Prefix: r.Prefix, Origin: store.OriginLimit, Reason: "connection limit",
				By: "kernel", Created: r.Created, Expires: r.Expires})
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
		if err := e.st.PutBlocks(adopt...); err != nil {
			return st, fmt.Errorf("store: %w", err)
		}
		for _, b := range adopt {
			e.cacheBlock(b)
			e.history(store.Change{Time: now, Action: "block", Prefix: b.Prefix, Origin: b.Origin, Reason: b.Reason, By: b.By})
		}
		st.Adopted = len(adopt)
		present += len(adopt)
		e.changed()
	}
	for _, f := range fixes {
		if err := e.k.Block(f.p, f.exp); err != nil {
			return st, err
		}
		st.Fixed++
	}
	if len(stale) > 0 {
		n, err := e.k.UnblockMany(slices.Values(stale))
		st.Removed += n
		if err != nil {
			return st, err
		}
	}

	// What the decisions hold that the kernel lacks.
	if present >= e.desiredCount() {
		return st, nil
	}
	kernelEmpty := present == 0
	missing := func(yield func(netip.Prefix, time.Time) bool) {
		for p, exp := range e.desired() {
			if !kernelEmpty {
				if _, ok, _ := e.k.LookupBlock(p); ok {
					continue
				}
			}
			if !yield(p, exp) {
				return
			}
		}
	}
	n, err := e.k.BlockMany(missing)
	st.Written += n
	return st, err
}

// desired yields every prefix some live decision blocks, once, with the
// expiry the kernel should hold (zero: never).
func (e *Engine) desired() iter.Seq2[netip.Prefix, time.Time] {
	return func(yield func(netip.Prefix, time.Time) bool) {
		inLists := func(p netip.Prefix, upto int) bool {
			for _, l := range e.lists[:upto] {
				if l.List.Has(p) {
					return true
				}
			}
			return false
		}
		for i, l := range e.lists {
			for p := range l.List.All() {
				if i > 0 && inLists(p, i) {
					continue
				}
				if !yield(p, time.Time{}) {
					return
				}
			}
		}
		for p := range e.blocks {
			if inLists(p, len(e.lists)) {
				continue
			}
			if exp, ok := e.effective(p); ok && !yield(p, exp) {
				return
			}
		}
	}
}

func (e *Engine) desiredCount() int {
	n := 0
	for range e.desired() {
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
func (e *Engine) Sweep(window time.Duration) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var errs []error
	for p, recs := range e.blocks {
		for origin, b := range recs {
			if !b.Expired(now) {
				continue
			}
			if _, err := e.st.DeleteBlock(origin, p); err != nil {
				errs = append(errs, err)
				continue
			}
			e.uncacheBlock(origin, p)
			e.history(store.Change{Time: now, Action: "expire", Prefix: p, Origin: origin, Reason: b.Reason})
			e.changed()
		}
	}
	for p, a := range e.allows {
		if a.Expired(now) {
			if _, err := e.st.DeleteAllow(store.OriginManual, p); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(e.allows, p)
			e.history(store.Change{Time: now, Action: "expire", Prefix: p, Origin: store.OriginManual, Reason: "allow"})
		}
	}
	for p, a := range e.fleetAllows {
		if a.Expired(now) {
			if _, err := e.st.DeleteAllow(store.OriginFleetAllow, p); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(e.fleetAllows, p)
		}
	}
	if _, err := e.k.SweepTrackers(window); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
