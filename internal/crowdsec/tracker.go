package crowdsec

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/store"
)

// Ref names what a prefix holds of one decision origin: one block, that
// ends when the longest of the origin's decisions of the prefix does.
type Ref struct {
	Prefix netip.Prefix
	Origin string // the decisions' origin: cscli, CAPI …
}

// Refusal says why a ban decision hbf reads is not enforced, as
// hbf_crowdsec_refused's reason.
type Refusal string

const (
	RefusedPolicy Refusal = "policy" // protected, or wider than the CrowdSec minimum prefix
	RefusedCap    Refusal = "cap"    // its origin holds the most decisions it may
)

// Refusals are every reason, in the order metrics list them.
var Refusals = []Refusal{RefusedPolicy, RefusedCap}

// ownScenarios are the scenarios of the alerts hbf pushes: their
// decisions are hbf's own blocks, never applied again as new ones.
const ownScenarios = "hbf/"

type held struct {
	ref      Ref
	expires  time.Time
	scenario string
}

// Tracker follows the decisions in force from what the stream returns,
// and says what the blocks they make are to become.
type Tracker struct {
	// Check is the host's policy for a decision's prefix: nil, or why it is
	// refused.
	Check func(netip.Prefix) error
	// MaxPerOrigin bounds the decisions in force of each origin; 0: none.
	MaxPerOrigin int
	Now          func() time.Time

	byID map[int64]held
	// byRef are each Ref's decisions: most often one, so a slice, where a
	// map each cost a snapshot of 100,000 a third of its time.
	byRef     map[Ref][]int64
	perOrigin map[string]int
}

// Outcome is what one read of the stream changes.
type Outcome struct {
	Put     []store.Block // the blocks of every Ref with a decision in force that changed (all of them when Whole)
	Remove  []Ref         // the Refs whose last decision ended
	Whole   bool          // Put is every block of CrowdSec's: any other one ends
	Skipped map[Skip]int
	Refused map[Refusal]int
}

// Apply takes one read of the stream: with whole, a snapshot of every
// decision in force, which replaces all the tracker held.
func (t *Tracker) Apply(ch Changes, whole bool) Outcome {
	now := t.Now()
	out := Outcome{Whole: whole, Skipped: map[Skip]int{}, Refused: map[Refusal]int{}}
	// What changed, when not whole: a snapshot puts every Ref it holds.
	touched := map[Ref]bool{}
	touch := func(r Ref) {
		if !whole {
			touched[r] = true
		}
	}
	if whole || t.byID == nil {
		t.byID, t.byRef, t.perOrigin = make(map[int64]held, len(ch.New)), make(map[Ref][]int64, len(ch.New)), map[string]int{}
	}
	for _, d := range ch.Deleted {
		if h, ok := t.byID[d.ID]; ok {
			t.forget(d.ID, h)
			touch(h.ref)
		}
	}
	for _, d := range ch.New {
		if strings.HasPrefix(d.Scenario, ownScenarios) {
			out.Skipped[SkipOwn]++
			continue
		}
		p, err := d.Prefix()
		var expires time.Time
		if err == nil {
			expires, err = d.Expires(now)
		}
		if se, ok := err.(*SkipError); ok {
			out.Skipped[se.Reason]++
			continue
		}
		if t.Check != nil && t.Check(p) != nil {
			out.Refused[RefusedPolicy]++
			continue
		}
		h := held{ref: Ref{Prefix: p, Origin: d.Origin}, expires: expires, scenario: d.Scenario}
		if old, ok := t.byID[d.ID]; ok {
			t.forget(d.ID, old) // LAPI sends a decision again when it changes
			touch(old.ref)
		}
		if t.MaxPerOrigin > 0 && t.perOrigin[d.Origin] >= t.MaxPerOrigin {
			out.Refused[RefusedCap]++
			continue
		}
		t.byID[d.ID] = h
		t.byRef[h.ref] = append(t.byRef[h.ref], d.ID)
		t.perOrigin[d.Origin]++
		touch(h.ref)
	}
	if whole {
		out.Put = make([]store.Block, 0, len(t.byRef))
		for ref := range t.byRef {
			if b, ok := t.block(ref, now); ok {
				out.Put = append(out.Put, b)
			}
		}
		return out
	}
	for ref := range touched {
		if b, ok := t.block(ref, now); ok {
			out.Put = append(out.Put, b)
		} else {
			out.Remove = append(out.Remove, ref)
		}
	}
	return out
}

// forget drops decision id, held as h.
func (t *Tracker) forget(id int64, h held) {
	delete(t.byID, id)
	ids := slices.DeleteFunc(t.byRef[h.ref], func(i int64) bool { return i == id })
	if len(ids) == 0 {
		delete(t.byRef, h.ref)
	} else {
		t.byRef[h.ref] = ids
	}
	t.perOrigin[h.ref.Origin]--
}

// block is ref's block: until the longest of its decisions still in force
// ends, with that decision's scenario as its reason.
func (t *Tracker) block(ref Ref, now time.Time) (store.Block, bool) {
	var longest held
	for _, id := range t.byRef[ref] {
		if h := t.byID[id]; h.expires.After(longest.expires) {
			longest = h
		}
	}
	if !longest.expires.After(now) {
		return store.Block{}, false
	}
	return store.Block{Prefix: ref.Prefix, Origin: store.OriginCrowdSec(ref.Origin), Reason: longest.scenario,
		By: "crowdsec", Created: now, Expires: longest.expires}, true
}

// Held counts the decisions in force, by origin.
func (t *Tracker) Held() map[string]int {
	out := make(map[string]int, len(t.perOrigin))
	for o, n := range t.perOrigin {
		if n > 0 {
			out[o] = n
		}
	}
	return out
}
