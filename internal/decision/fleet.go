package decision

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/hbf-firewall/hbf/internal/fleet"
	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/store"
)

// The fleet's side of the decisions: the blocks other nodes published that
// this host applies (origin fleet:<node>), the fleet's allowlist and
// unblocks, and what this host publishes.

// ApplyFleet applies the fleet's blocks of apply here (again, when their
// values changed) and ends those of remove, in one store transaction,
// then in the kernel. It touches only their prefixes, whatever else the
// fleet holds, and returns how many records it added and removed.
func (e *Engine) ApplyFleet(apply []fleet.Applied, remove []fleet.Ref) (added, removed int, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	after := newPending(e.fleetRecords)
	for _, r := range remove {
		delete(after.of(r.Prefix), store.OriginFleet(r.Origin))
	}
	for _, a := range apply {
		b := a.Block
		rec := store.Block{Prefix: b.Prefix, Origin: store.OriginFleet(a.Origin), Reason: b.Reason,
			By: "fleet", Created: b.Created, Expires: b.ExpiresAt}
		for _, p := range b.Ports {
			proto, _ := ports.ParseProto(p.Proto) // evidence only: an unknown protocol shows as TCP
			rec.Ports = append(rec.Ports, store.PortSeen{Port: p.Port, Proto: proto, Seen: p.Seen})
		}
		after.of(b.Prefix)[rec.Origin] = rec
	}
	a, err := e.replaceRecords(after, "fleet")
	return a.Added, a.Removed, err
}

// pending are the records of a kind each prefix is to hold, from those it
// holds now (records, nil for none).
type pending struct {
	want    map[netip.Prefix]map[store.Origin]store.Block
	records func(netip.Prefix) map[store.Origin]store.Block
}

func newPending(records func(netip.Prefix) map[store.Origin]store.Block) *pending {
	return &pending{want: map[netip.Prefix]map[store.Origin]store.Block{}, records: records}
}

// of is p's records to be, to change in place.
func (w *pending) of(p netip.Prefix) map[store.Origin]store.Block {
	m, ok := w.want[p]
	if !ok {
		if m = w.records(p); m == nil {
			m = map[store.Origin]store.Block{}
		}
		w.want[p] = m
	}
	return m
}

// Applied is what a read of a remote source's decisions changed.
type Applied struct {
	Added, Removed int
	// Enforced is when the kernel held the read's blocks, before the
	// store did (time.Now's clock, for timings; zero: nothing changed).
	Enforced time.Time
}

// replaceRecords makes each prefix's records of a kind those w holds; by
// is who changed them, for the history. These kinds copy what a remote source holds (the
// fleet's etcd, CrowdSec's LAPI), and a snapshot of one may hold 100,000
// decisions: the kernel takes them first, in bulk, and the store after,
// so enforcement waits for no disk. A crash between loses nothing: the
// restart's reconciliation removes what the store lacks, and the source's
// next snapshot writes it again. All or nothing: when the kernel or the
// store refuses, both go back as they were.
func (e *Engine) replaceRecords(w *pending, by string) (a Applied, err error) {
	// Only what the kernel needs comes before it: the undo and the
	// history are made from befores when they are wanted.
	var changes []store.Replacement
	var befores []map[store.Origin]store.Block
	var fresh []int // of each change's Put, how many are new records (the first)
	for p, after := range w.want {
		before := w.records(p)
		var drop []store.Origin
		for o := range before {
			if _, ok := after[o]; !ok {
				drop = append(drop, o)
			}
		}
		var put []store.Block
		n := 0
		for o, b := range after {
			old, ok := before[o]
			switch {
			case !ok:
				put = append(put, b)
				put[n], put[len(put)-1] = put[len(put)-1], put[n]
				n++
			case !sameRecord(old, b):
				put = append(put, b)
			}
		}
		if len(drop)+len(put) == 0 {
			continue
		}
		changes = append(changes, store.Replacement{Prefix: p, Drop: drop, Put: put})
		befores = append(befores, before)
		fresh = append(fresh, n)
		a.Added += n
		a.Removed += len(drop)
	}
	if len(changes) == 0 {
		return Applied{}, nil
	}
	prefixes := make([]netip.Prefix, len(changes))
	for i, c := range changes {
		e.cacheReplace(c)
		prefixes[i] = c.Prefix
	}
	err = e.syncKernelMany(prefixes)
	if err != nil {
		err = fmt.Errorf("kernel: %w", err)
	} else {
		a.Enforced = time.Now()
		if serr := e.st.ReplaceMany(changes); serr != nil {
			err = fmt.Errorf("store: %w", serr)
		}
	}
	if err != nil {
		for i, c := range changes {
			e.cacheReplace(store.Replacement{Prefix: c.Prefix, Drop: slices.Collect(maps.Keys(w.want[c.Prefix])),
				Put: slices.Collect(maps.Values(befores[i]))})
		}
		if uerr := e.syncKernelMany(prefixes); uerr != nil {
			e.undoFailures++
			e.log.Error("blocks the kernel or the store refused could not be undone in the kernel; the two disagree until the next reconciliation",
				"by", by, "prefixes", len(prefixes), "refused", err, "undo", uerr)
		}
		return Applied{}, err
	}
	now := e.now()
	history := make([]store.Change, 0, a.Added+a.Removed)
	for i, c := range changes {
		for _, o := range c.Drop {
			history = append(history, store.Change{Time: now, Action: "unblock", Prefix: c.Prefix, Origin: o, By: by})
		}
		for _, b := range c.Put[:fresh[i]] {
			history = append(history, store.Change{Time: now, Action: "block", Prefix: c.Prefix, Origin: b.Origin, Reason: b.Reason, By: by})
		}
	}
	if herr := e.st.Record(history...); herr != nil {
		e.log.Warn("cannot record history", "err", herr)
	}
	return a, nil
}

// bulkFrom is where syncKernelMany turns to bulk writes: a fleet delivery
// brings a prefix or two, for which the bulk writers cost more than
// they save.
const bulkFrom = 64

// syncKernelMany brings the kernel in step with the records of prefixes,
// in bulk when they are many.
func (e *Engine) syncKernelMany(prefixes []netip.Prefix) error {
	if len(prefixes) < bulkFrom {
		for _, p := range prefixes {
			if err := e.syncKernel(p); err != nil {
				return err
			}
		}
		return nil
	}
	var gone []netip.Prefix
	_, err := e.k.BlockMany(func(yield func(netip.Prefix, time.Time) bool) {
		for _, p := range prefixes {
			exp, ok := e.effective(p)
			if !ok {
				gone = append(gone, p)
			} else if !yield(p, exp) {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	_, err = e.k.UnblockMany(slices.Values(gone))
	return err
}

// fleetRecords are p's records of fleet origins; nil when there are none.
func (e *Engine) fleetRecords(p netip.Prefix) map[store.Origin]store.Block {
	return e.recordsOf(p, func(o store.Origin) bool { return o.FleetNode() != "" })
}

// recordsOf are p's records of the origins of a kind; nil when there are
// none, which spares a snapshot of new prefixes a map each.
func (e *Engine) recordsOf(p netip.Prefix, kind func(store.Origin) bool) map[store.Origin]store.Block {
	var out map[store.Origin]store.Block
	for o, b := range e.blocks[p] {
		if kind(o) {
			if out == nil {
				out = map[store.Origin]store.Block{}
			}
			out[o] = b
		}
	}
	return out
}

// cacheReplace does to the cache what r did to the store.
func (e *Engine) cacheReplace(r store.Replacement) {
	for _, o := range r.Drop {
		e.uncacheBlock(o, r.Prefix)
	}
	for _, b := range r.Put {
		e.cacheBlock(b)
	}
}

// sameRecord compares records whose times went through JSON.
func sameRecord(a, b store.Block) bool {
	return a.Reason == b.Reason && a.Created.Equal(b.Created) && a.Expires.Equal(b.Expires) && len(a.Ports) == len(b.Ports)
}

// Share says which of this host's decisions the fleet shares.
type Share struct {
	Scans  bool // the kernel's scan blocks
	Limits bool // the kernel's blocks for connection limits
	Manual bool // blocks given through the API with --fleet (manual, fail2ban's)
}

// Shareable are this host's decisions the fleet shares, as share says.
func (e *Engine) Shareable(share Share) []fleet.Block {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var out []fleet.Block
	for _, recs := range e.blocks {
		for _, b := range recs {
			caller := b.Origin == store.OriginManual || b.Origin.Fail2banJail() != "" // a decision given through the API
			shared := share.Scans && b.Origin == store.OriginScan || share.Limits && b.Origin == store.OriginLimit ||
				share.Manual && caller && b.Fleet
			if b.Expired(now) || !shared {
				continue
			}
			fb := fleet.Block{Version: fleet.Version, Prefix: b.Prefix, Origin: string(b.Origin), Reason: b.Reason,
				Created: b.Created, ExpiresAt: b.Expires}
			for _, p := range b.Ports {
				fb.Ports = append(fb.Ports, fleet.Port{Port: p.Port, Proto: p.Proto.String(), Seen: p.Seen})
			}
			out = append(out, fb)
		}
	}
	return out
}

// EndByFleet ends this host's own blocks that an unblock of the fleet ends:
// those made before it. It returns how many prefixes it unblocked.
func (e *Engine) EndByFleet(unblocks map[netip.Prefix]fleet.Unblock) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for p, u := range unblocks {
		after := map[store.Origin]store.Block{}
		ended := false
		for o, b := range e.blocks[p] {
			if o.FleetNode() == "" && !b.Created.After(u.At) {
				ended = true
				continue
			}
			after[o] = b
		}
		if !ended {
			continue
		}
		if err := e.commit(e.blocksEdit("fleet unblock", p, after)); err != nil {
			e.log.Error("the fleet's unblock could not be applied here", "prefix", p, "err", err)
			continue
		}
		n++
		now := e.now()
		by := "fleet: " + u.By
		e.history(store.Change{Time: now, Action: "unblock", Prefix: p, By: by})
		e.publish(&report.Unblock{Time: now, Prefix: p, By: by})
	}
	if n > 0 {
		e.changed()
	}
	return n
}

// SetFleetAllows makes the fleet's allowlist here exactly allows: in the
// store, then in the kernel's allowlist.
func (e *Engine) SetFleetAllows(allows map[netip.Prefix]fleet.Allow) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	want := map[netip.Prefix]store.Allow{}
	for p, a := range allows {
		want[p] = store.Allow{Prefix: p, Origin: store.OriginFleetAllow, Reason: a.Reason, By: a.By,
			Created: a.Created, Expires: a.ExpiresAt}
	}
	if maps.EqualFunc(want, e.fleetAllows, func(a, b store.Allow) bool {
		return a.Reason == b.Reason && a.Expires.Equal(b.Expires) && a.By == b.By
	}) {
		return nil
	}
	var errs []error
	for p := range e.fleetAllows {
		if _, ok := want[p]; !ok {
			_, err := e.st.DeleteAllow(store.OriginFleetAllow, p)
			errs = append(errs, err)
		}
	}
	if len(want) > 0 {
		errs = append(errs, e.st.PutAllows(slices.Collect(maps.Values(want))...))
	}
	e.fleetAllows = want
	errs = append(errs, e.syncAllows())
	return errors.Join(errs...)
}

// FleetApplied are the fleet's blocks applied here, by origin node, with
// when each was made.
func (e *Engine) FleetApplied() map[string]map[netip.Prefix]time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]map[netip.Prefix]time.Time{}
	for p, recs := range e.blocks {
		for o, b := range recs {
			if node := o.FleetNode(); node != "" {
				if out[node] == nil {
					out[node] = map[netip.Prefix]time.Time{}
				}
				out[node][p] = b.Created
			}
		}
	}
	return out
}

// FleetEntries counts the fleet's blocks applied here, by origin node.
func (e *Engine) FleetEntries() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	now := e.now()
	for _, recs := range e.blocks {
		for o, b := range recs {
			if node := o.FleetNode(); node != "" && !b.Expired(now) {
				out[node]++
			}
		}
	}
	return out
}
