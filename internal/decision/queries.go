package decision

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/protect"
	"github.com/hbf-firewall/hbf/internal/store"
)

// Blocks calls fn for every live block, records first, then list entries.
func (e *Engine) Blocks(ctx context.Context, fn func(api.Block) error) error {
	e.mu.Lock()
	now := e.now()
	var recs []store.Block
	for _, m := range e.blocks {
		for _, b := range m {
			if !b.Expired(now) {
				recs = append(recs, b)
			}
		}
	}
	lists := slices.Clone(e.lists)
	e.mu.Unlock()

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
		if err := fn(e.apiBlock(b)); err != nil {
			return err
		}
	}
	for _, l := range lists {
		for p := range l.List.All() {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := api.Block{Prefix: p, Origin: string(store.OriginFile), Reason: "blocklist", Source: l.Spec.Where}
			if r, ok, _ := e.k.LookupBlock(p); ok {
				b.Created, b.Packets = r.Created, r.Packets
			}
			if err := fn(b); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *Engine) apiBlock(b store.Block) api.Block {
	out := api.Block{Prefix: b.Prefix, Origin: string(b.Origin), Reason: b.Reason, By: b.By,
		Created: b.Created, Expires: b.Expires}
	for _, p := range b.Ports {
		out.Ports = append(out.Ports, api.PortSeen{Port: p.Port, Proto: p.Proto, Seen: p.Seen})
	}
	if r, ok, _ := e.k.LookupBlock(b.Prefix); ok {
		out.Packets = r.Packets
	}
	return out
}

// Allows lists what is never blocked, in the order its entries win a
// place in the kernel's allowlist.
func (e *Engine) Allows() []api.Allow {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, _ := e.protected.Kernel(e.k.Capacity().Allows)
	var out []api.Allow
	for i, en := range e.protected.Entries() {
		out = append(out, apiAllow(en, i >= len(in)))
	}
	return out
}

// apiAllow is a protected entry as the API shows it: an allowlist entry
// with its own reason, the others with why they are protected.
func apiAllow(en protect.Entry, unenforced bool) api.Allow {
	a := api.Allow{Prefix: en.Prefix, Origin: en.Kind.String(), Reason: en.Why, By: en.By, Created: en.Created,
		Expires: en.Expires, Unenforced: unenforced}
	if en.Kind == protect.KindAllow || en.Kind == protect.KindFleetAllow {
		a.Reason = en.Reason
	}
	return a
}

// Why explains what hbf does with addr.
func (e *Engine) Why(addr netip.Addr) api.Why {
	e.mu.Lock()
	now := e.now()
	var recs []store.Block
	for p, m := range e.blocks {
		if p.Contains(addr) {
			for _, b := range m {
				if !b.Expired(now) {
					recs = append(recs, b)
				}
			}
		}
	}
	lists := slices.Clone(e.lists)
	e.mu.Unlock()

	why := api.Why{Addr: addr}
	for _, b := range recs {
		why.Blocks = append(why.Blocks, e.apiBlock(b))
	}
	for _, l := range lists {
		for _, p := range l.List.Holding(addr) {
			b := api.Block{Prefix: p, Origin: string(store.OriginFile), Reason: "blocklist", Source: l.Spec.Where}
			if r, ok, _ := e.k.LookupBlock(p); ok {
				b.Created, b.Packets = r.Created, r.Packets
			}
			why.Blocks = append(why.Blocks, b)
		}
	}
	e.mu.Lock()
	for _, en := range e.protected.Holding(addr) {
		why.Allows = append(why.Allows, apiAllow(en, false))
	}
	e.mu.Unlock()
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

// Counts reports the entries by kind, for status.
func (e *Engine) Counts() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	now := e.now()
	for _, m := range e.blocks {
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
	for _, l := range e.lists {
		out["blocks_file"] += l.List.Len()
	}
	out["allows"] = e.protected.Len()
	return out
}

// UndoFailures counts the changes the kernel refused whose undo in the
// store failed too.
func (e *Engine) UndoFailures() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.undoFailures
}

// Describe says what blocks exactly p: the origins of its live decisions
// (a list's as file), the reason of the one that ends last, and when that
// is (zero: never). No origins: nothing blocks p now.
func (e *Engine) Describe(p netip.Prefix) (origins []string, reason string, expires time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	last := store.Block{}
	for _, b := range e.blocks[p] {
		if b.Expired(now) {
			continue
		}
		origins = append(origins, string(b.Origin))
		if len(origins) == 1 || (!last.Expires.IsZero() && (b.Expires.IsZero() || b.Expires.After(last.Expires))) {
			last = b
		}
	}
	reason, expires = last.Reason, last.Expires
	if path := e.listHolding(p); path != "" {
		origins = append(origins, string(store.OriginFile))
		if len(origins) == 1 {
			reason = "blocklist"
		}
		expires = time.Time{}
	}
	slices.Sort(origins)
	return origins, reason, expires
}
