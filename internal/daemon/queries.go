package daemon

import (
	"cmp"
	"context"
	"net/netip"
	"slices"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/store"
)

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
			if r, ok, _ := s.k.LookupBlock(p); ok {
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
		out.Ports = append(out.Ports, api.PortSeen{Port: p.Port, Proto: p.Proto, Seen: p.Seen})
	}
	if r, ok, _ := s.k.LookupBlock(b.Prefix); ok {
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
	for a := range s.allAllows() {
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
			if r, ok, _ := s.k.LookupBlock(p); ok {
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
				kind := string(b.Origin)
				if b.Origin.FleetNode() != "" {
					kind = "fleet" // hbf fleet status tells them apart
				}
				out["blocks_"+kind]++
			}
		}
	}
	for _, l := range s.lists {
		out["blocks_file"] += l.list.Len()
	}
	out["allows"] = len(s.fixed)
	for a := range s.allAllows() {
		if !a.Expired(now) {
			out["allows"]++
		}
	}
	return out
}

// UndoFailures counts the changes the kernel refused whose undo in the
// store failed too.
func (s *state) UndoFailures() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.undoFailures
}
