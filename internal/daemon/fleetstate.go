package daemon

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

// SetFleet makes the fleet's blocks applied here exactly applied, in one
// store transaction, then in the kernel. It returns how many records it
// added and removed.
func (s *state) SetFleet(applied []fleet.Applied) (added, removed int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[netip.Prefix]map[store.Origin]store.Block{}
	for _, a := range applied {
		b := a.Block
		rec := store.Block{Prefix: b.Prefix, Origin: store.OriginFleet(a.Origin), Reason: b.Reason,
			By: "fleet", Created: b.Created, Expires: b.ExpiresAt}
		for _, p := range b.Ports {
			proto, _ := ports.ParseProto(p.Proto) // evidence only: an unknown protocol shows as TCP
			rec.Ports = append(rec.Ports, store.PortSeen{Port: p.Port, Proto: proto, Seen: p.Seen})
		}
		if want[b.Prefix] == nil {
			want[b.Prefix] = map[store.Origin]store.Block{}
		}
		want[b.Prefix][rec.Origin] = rec
	}
	var changes, undo []store.Replacement
	var history []store.Change
	now := s.now()
	for _, p := range s.fleetPrefixes(want) {
		before, after := s.fleetRecords(p), want[p]
		var drop []store.Origin
		for o := range before {
			if _, ok := after[o]; !ok {
				drop = append(drop, o)
				removed++
				history = append(history, store.Change{Time: now, Action: "unblock", Prefix: p, Origin: o, By: "fleet"})
			}
		}
		var put []store.Block
		for o, b := range after {
			if old, ok := before[o]; !ok || !sameRecord(old, b) {
				put = append(put, b)
				if !ok {
					added++
					history = append(history, store.Change{Time: now, Action: "block", Prefix: p, Origin: o, Reason: b.Reason, By: "fleet"})
				}
			}
		}
		if len(drop)+len(put) == 0 {
			continue
		}
		changes = append(changes, store.Replacement{Prefix: p, Drop: drop, Put: put})
		undo = append(undo, store.Replacement{Prefix: p, Drop: slices.Collect(maps.Keys(after)), Put: slices.Collect(maps.Values(before))})
	}
	if len(changes) == 0 {
		return 0, 0, nil
	}
	if err := s.st.ReplaceMany(changes); err != nil {
		return 0, 0, fmt.Errorf("store: %w", err)
	}
	for _, c := range changes {
		s.cacheReplace(c)
	}
	// The kernel follows prefix by prefix; those it refuses go back as
	// they were, in the store too.
	var refused []store.Replacement
	for i, c := range changes {
		if kerr := s.syncKernel(c.Prefix); kerr != nil {
			err = errors.Join(err, kerr)
			refused = append(refused, undo[i])
		}
	}
	if len(refused) > 0 {
		if uerr := s.st.ReplaceMany(refused); uerr != nil {
			s.undoFailures++
			s.log.Error("fleet blocks the kernel refused could not be undone; the store and the kernel disagree until the next reconciliation",
				"prefixes", len(refused), "undo", uerr)
		} else {
			for _, r := range refused {
				s.cacheReplace(r)
				err = errors.Join(err, s.syncKernel(r.Prefix))
			}
		}
	}
	if herr := s.st.Record(history...); herr != nil {
		s.log.Warn("cannot record history", "err", herr)
	}
	return added, removed, err
}

// fleetPrefixes are the prefixes with fleet records now or in want.
func (s *state) fleetPrefixes(want map[netip.Prefix]map[store.Origin]store.Block) []netip.Prefix {
	seen := maps.Clone(want)
	for p, recs := range s.blocks {
		for o := range recs {
			if o.FleetNode() != "" {
				seen[p] = nil
			}
		}
	}
	return slices.Collect(maps.Keys(seen))
}

// fleetRecords are p's records of fleet origins.
func (s *state) fleetRecords(p netip.Prefix) map[store.Origin]store.Block {
	out := map[store.Origin]store.Block{}
	for o, b := range s.blocks[p] {
		if o.FleetNode() != "" {
			out[o] = b
		}
	}
	return out
}

// cacheReplace does to the cache what r did to the store.
func (s *state) cacheReplace(r store.Replacement) {
	for _, o := range r.Drop {
		s.uncacheBlock(o, r.Prefix)
	}
	for _, b := range r.Put {
		s.cacheBlock(b)
	}
}

// sameRecord compares records whose times went through JSON.
func sameRecord(a, b store.Block) bool {
	return a.Reason == b.Reason && a.Created.Equal(b.Created) && a.Expires.Equal(b.Expires) && len(a.Ports) == len(b.Ports)
}

// Shareable are this host's decisions the fleet shares: scan blocks when
// scans, manual blocks given with --fleet when manual.
func (s *state) Shareable(scans, manual bool) []fleet.Block {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []fleet.Block
	for _, recs := range s.blocks {
		for _, b := range recs {
			if b.Expired(now) || !(scans && b.Origin == store.OriginScan || manual && b.Origin == store.OriginManual && b.Fleet) {
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
func (s *state) EndByFleet(unblocks map[netip.Prefix]fleet.Unblock) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p, u := range unblocks {
		after := map[store.Origin]store.Block{}
		ended := false
		for o, b := range s.blocks[p] {
			if o.FleetNode() == "" && !b.Created.After(u.At) {
				ended = true
				continue
			}
			after[o] = b
		}
		if !ended {
			continue
		}
		if err := s.commit(s.blocksEdit("fleet unblock", p, after)); err != nil {
			s.log.Error("the fleet's unblock could not be applied here", "prefix", p, "err", err)
			continue
		}
		n++
		now := s.now()
		by := "fleet: " + u.By
		s.history(store.Change{Time: now, Action: "unblock", Prefix: p, By: by})
		s.publish(&report.Unblock{Time: now, Prefix: p, By: by})
	}
	if n > 0 {
		s.changed()
	}
	return n
}

// SetFleetAllows makes the fleet's allowlist here exactly allows: in the
// store, then in the kernel's allowlist.
func (s *state) SetFleetAllows(allows map[netip.Prefix]fleet.Allow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[netip.Prefix]store.Allow{}
	for p, a := range allows {
		want[p] = store.Allow{Prefix: p, Origin: store.OriginFleetAllow, Reason: a.Reason, By: a.By,
			Created: a.Created, Expires: a.ExpiresAt}
	}
	if maps.EqualFunc(want, s.fleetAllows, func(a, b store.Allow) bool {
		return a.Reason == b.Reason && a.Expires.Equal(b.Expires) && a.By == b.By
	}) {
		return nil
	}
	var errs []error
	for p := range s.fleetAllows {
		if _, ok := want[p]; !ok {
			_, err := s.st.DeleteAllow(store.OriginFleetAllow, p)
			errs = append(errs, err)
		}
	}
	if len(want) > 0 {
		errs = append(errs, s.st.PutAllows(slices.Collect(maps.Values(want))...))
	}
	s.fleetAllows = want
	errs = append(errs, s.syncAllows())
	return errors.Join(errs...)
}

// FleetApplied are the fleet's blocks applied here, by origin node, with
// when each was made.
func (s *state) FleetApplied() map[string]map[netip.Prefix]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[netip.Prefix]time.Time{}
	for p, recs := range s.blocks {
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
func (s *state) FleetEntries() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	now := s.now()
	for _, recs := range s.blocks {
		for o, b := range recs {
			if node := o.FleetNode(); node != "" && !b.Expired(now) {
				out[node]++
			}
		}
	}
	return out
}
