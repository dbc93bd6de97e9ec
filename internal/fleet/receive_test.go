package fleet

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/policy"
)

var t0 = time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)

func viewOf(blocks map[string][]Block) View {
	v := newView()
	for node, bs := range blocks {
		v.Blocks[node] = map[netip.Prefix]Block{}
		for _, b := range bs {
			v.Blocks[node][b.Prefix] = b
		}
	}
	return v
}

func addr(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 32)
}

func allowAll(netip.Prefix) error { return nil }

func applied(d Decision) map[string]bool {
	out := map[string]bool{}
	for _, a := range d.Apply {
		out[a.Origin+" "+a.Block.Prefix.String()] = true
	}
	return out
}

func TestReceiverAppliesWhatOthersPublish(t *testing.T) {
	r := NewReceiver("me", Limits{MinReporters: 1})
	v := viewOf(map[string][]Block{
		"me": {block(addr(1), t0, time.Hour)},
		"a":  {block(addr(2), t0, time.Hour), block(addr(3), t0.Add(-2*time.Hour), time.Hour)},
		"b":  {block(addr(4), t0, 0)},
	})
	d := decide(r, v, allowAll, t0.Add(time.Minute))
	if got := applied(d); len(got) != 2 || !got["a 198.51.100.2/32"] || !got["b 198.51.100.4/32"] {
		t.Errorf("applied %v: want a's live block and b's, neither its own nor an expired one", got)
	}
	if len(d.New()) != 2 {
		t.Errorf("new %+v", d.New())
	}
	if d := decide(r, v, allowAll, t0.Add(2*time.Minute)); len(d.New()) != 0 || len(d.Apply) != 2 {
		t.Errorf("the second look: %d applied, %d new; want 2 and none", len(d.Apply), len(d.New()))
	}
}

func TestReceiverHonoursTheFleetsUnblocks(t *testing.T) {
	r := NewReceiver("me", Limits{MinReporters: 1})
	v := viewOf(map[string][]Block{"a": {block(addr(2), t0, time.Hour)}, "b": {block(addr(2), t0.Add(time.Hour), 2*time.Hour)}})
	v.Unblocks[addr(2)] = Unblock{Prefix: addr(2), At: t0.Add(time.Minute)}
	got := applied(decide(r, v, allowAll, t0.Add(90*time.Minute)))
	if got["a 198.51.100.2/32"] || !got["b 198.51.100.2/32"] {
		t.Errorf("applied %v: want the block made after the unblock only", got)
	}
}

// --fleet-min-reporters: a scan counts once enough nodes saw it; a manual
// block is one operator's decision and needs one.
func TestReceiverWaitsForEnoughReporters(t *testing.T) {
	r := NewReceiver("me", Limits{MinReporters: 2})
	manual := block(addr(9), t0, time.Hour)
	manual.Origin = "manual"
	v := viewOf(map[string][]Block{"a": {block(addr(2), t0, time.Hour), manual}})
	d := decide(r, v, allowAll, t0)
	if got := applied(d); len(got) != 1 || !got["a 198.51.100.9/32"] || d.Pending != 1 {
		t.Errorf("one reporter: applied %v, %d pending", got, d.Pending)
	}
	v.Blocks["b"] = map[netip.Prefix]Block{addr(2): block(addr(2), t0, time.Hour)}
	if got := applied(decide(r, v, allowAll, t0)); !got["a 198.51.100.2/32"] || !got["b 198.51.100.2/32"] {
		t.Errorf("two reporters: applied %v", got)
	}
}

func TestReceiverAppliesThisHostsPolicy(t *testing.T) {
	r := NewReceiver("me", Limits{MinReporters: 1})
	v := viewOf(map[string][]Block{"a": {block(addr(1), t0, time.Hour), block(netip.MustParsePrefix("10.0.0.0/7"), t0, time.Hour)}})
	check := func(p netip.Prefix) error {
		if p.Bits() < 8 {
			return &policy.TooWideError{Prefix: p, MinBits: 8}
		}
		if p == addr(1) {
			return errors.New("an address of this host")
		}
		return nil
	}
	d := decide(r, v, check, t0)
	if len(d.Apply) != 0 || d.Refused[RejectProtected] != 1 || d.Refused[RejectTooWide] != 1 {
		t.Errorf("applied %v, refused %v", applied(d), d.Refused)
	}
	if d := decide(r, v, check, t0); len(d.Refused) != 0 {
		t.Errorf("refusals counted again: %v", d.Refused)
	}
}

func TestReceiverLimitsEachOrigin(t *testing.T) {
	r := NewReceiver("me", Limits{MinReporters: 1, PerMinute: 3, Quota: 5})
	var bs []Block
	for i := range 8 {
		bs = append(bs, block(addr(i+1), t0.Add(time.Duration(i)*time.Second), time.Hour))
	}
	v := viewOf(map[string][]Block{"a": bs, "b": {block(addr(100), t0, time.Hour)}})
	d := decide(r, v, allowAll, t0.Add(10*time.Second))
	got := applied(d)
	if len(got) != 4 || !got["a 198.51.100.1/32"] || !got["a 198.51.100.3/32"] || !got["b 198.51.100.100/32"] ||
		d.Refused[RejectRateLimited] != 5 {
		t.Errorf("the first minute: applied %v, refused %v; want a's 3 oldest and b's", got, d.Refused)
	}
	d = decide(r, v, allowAll, t0.Add(80*time.Second))
	if got := applied(d); len(got) != 6 || d.Refused[RejectQuota] != 3 {
		t.Errorf("the next minute: applied %v, refused %v; want a at its quota of 5", got, d.Refused)
	}
}

// decide gives r the view v read whole, as a node's first session does,
// under check as the first policy.
func decide(r *Receiver, v View, check func(netip.Prefix) error, now time.Time) Decision {
	c := Changes{Revision: 1, Whole: true}
	for origin, blocks := range v.Blocks {
		for p := range blocks {
			c.Blocks = append(c.Blocks, Ref{origin, p})
		}
	}
	c.Unblocks = v.Unblocks
	return r.Update(c, lookup(v), Policy{Check: check, Generation: 1}, now)
}

func lookup(v View) func(Ref) (Block, bool) {
	return func(ref Ref) (Block, bool) {
		b, ok := v.Blocks[ref.Origin][ref.Prefix]
		return b, ok
	}
}

// TestReceiverDecidesOnlyWhatChanged follows a view by its changes: one
// new block is decided alone, whatever the view holds, and what the once-
// a-second look finds (an expiry, a refilled budget, a second reporter, a
// new policy) is decided as it comes.
func TestReceiverDecidesOnlyWhatChanged(t *testing.T) {
	r := NewReceiver("me", Limits{MinReporters: 2, PerMinute: 1000})
	var bs []Block
	for i := range 200 {
		b := block(addr(i), t0, time.Hour)
		b.Origin = "manual"
		bs = append(bs, b)
	}
	v := viewOf(map[string][]Block{"a": bs})
	allow := Policy{Check: allowAll, Generation: 1}
	if d := decide(r, v, allowAll, t0); len(d.New()) != 200 || d.Applied != 200 {
		t.Fatalf("whole: %d new, %d applied", len(d.New()), d.Applied)
	}
	update := func(now time.Time, pol Policy, refs ...Ref) Decision {
		return r.Update(Changes{Revision: 2, Blocks: refs}, lookup(v), pol, now)
	}
	// One new block, expiring in a minute: decided alone.
	short := block(netip.MustParsePrefix("203.0.113.1/32"), t0, time.Minute)
	short.Origin = "manual"
	v.Blocks["b"] = map[netip.Prefix]Block{short.Prefix: short}
	d := update(t0, allow, Ref{"b", short.Prefix})
	if len(d.Apply) != 1 || len(d.New()) != 1 || len(d.Remove) != 0 || d.Applied != 201 {
		t.Fatalf("one new block: %+v", d)
	}
	// Nothing changed: nothing decided.
	if d := update(t0.Add(time.Second), allow); len(d.Apply)+len(d.Remove) != 0 {
		t.Fatalf("nothing changed, yet %+v", d)
	}
	// Its expiry, found by the look a second later, with no change.
	if d := update(t0.Add(time.Minute), allow); len(d.Remove) != 1 || d.Remove[0] != (Ref{"b", short.Prefix}) {
		t.Fatalf("expired: removed %v, want b's block", d.Remove)
	}
	// A scan block of one reporter waits; a second reporter applies both.
	scan := block(netip.MustParsePrefix("203.0.113.2/32"), t0, time.Hour)
	v.Blocks["b"] = map[netip.Prefix]Block{scan.Prefix: scan}
	if d := update(t0.Add(time.Minute), allow, Ref{"b", scan.Prefix}); len(d.Apply) != 0 || d.Pending != 1 {
		t.Fatalf("one reporter: %+v", d)
	}
	v.Blocks["c"] = map[netip.Prefix]Block{scan.Prefix: scan}
	if d := update(t0.Add(time.Minute), allow, Ref{"c", scan.Prefix}); len(d.New()) != 2 || d.Pending != 0 {
		t.Fatalf("two reporters: %+v", d)
	}
	// A new policy decides every block again: one is now protected.
	protect := Policy{Generation: 2, Check: func(p netip.Prefix) error {
		if p == addr(7) {
			return errors.New("protected")
		}
		return nil
	}}
	if d := update(t0.Add(time.Minute), protect); len(d.Remove) != 1 || d.Remove[0] != (Ref{"a", addr(7)}) ||
		d.Refused[RejectProtected] != 1 {
		t.Fatalf("new policy: %+v", d)
	}
}

// TestReceiverTriesWaitingBlocksAsTheBudgetRefills: blocks refused for
// their origin's rate are applied once the minute has passed, with no
// change in the view.
func TestReceiverTriesWaitingBlocksAsTheBudgetRefills(t *testing.T) {
	r := NewReceiver("me", Limits{MinReporters: 1, PerMinute: 2})
	var bs []Block
	for i := range 3 {
		bs = append(bs, block(addr(i), t0.Add(time.Duration(i)*time.Second), time.Hour))
	}
	v := viewOf(map[string][]Block{"a": bs})
	if d := decide(r, v, allowAll, t0); len(d.New()) != 2 || d.Refused[RejectRateLimited] != 1 {
		t.Fatalf("first: %+v", d)
	}
	pol := Policy{Check: allowAll, Generation: 1}
	if d := r.Update(Changes{Revision: 2}, lookup(v), pol, t0.Add(30*time.Second)); len(d.New()) != 0 {
		t.Fatalf("within the minute: %+v", d)
	}
	d := r.Update(Changes{Revision: 2}, lookup(v), pol, t0.Add(61*time.Second))
	if len(d.New()) != 1 || d.New()[0].Block.Prefix != addr(2) {
		t.Fatalf("after the minute: %+v, want the third block", d)
	}
}

// TestReceiverDropsWhatAWholeReadNoLongerHolds: blocks applied before a
// restart that are gone from the fleet when it is read are removed.
func TestReceiverDropsWhatAWholeReadNoLongerHolds(t *testing.T) {
	r := NewReceiver("me", Limits{MinReporters: 1})
	r.Known("a", addr(1), t0)
	r.Known("a", addr(2), t0)
	v := viewOf(map[string][]Block{"a": {block(addr(2), t0, time.Hour)}})
	d := decide(r, v, allowAll, t0)
	if len(d.Remove) != 1 || d.Remove[0] != (Ref{"a", addr(1)}) || len(d.New()) != 0 || d.Applied != 1 {
		t.Fatalf("%+v: want a's first block removed, the second kept and not new", d)
	}
}

// BenchmarkReceiverUpdate is a member's receiver taking one transaction
// of ten new blocks, as the fleet's busiest nodes publish them, with
// 10,000 blocks held: its cost per delivered block.
func BenchmarkReceiverUpdate(b *testing.B) {
	r := NewReceiver("me", Limits{MinReporters: 1})
	v := newView()
	pol := Policy{Check: allowAll, Generation: 1}
	nth := func(i int) Block {
		return block(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32), t0, time.Hour)
	}
	var origins []string
	for i := range 50 {
		origins = append(origins, fmt.Sprintf("n%d", i))
	}
	add := func(i int) Ref {
		origin := origins[i/10%50]
		if v.Blocks[origin] == nil {
			v.Blocks[origin] = map[netip.Prefix]Block{}
		}
		blk := nth(i)
		v.Blocks[origin][blk.Prefix] = blk
		return Ref{origin, blk.Prefix}
	}
	whole := Changes{Revision: 1, Whole: true}
	for i := range 10000 {
		whole.Blocks = append(whole.Blocks, add(i))
	}
	r.Update(whole, lookup(v), pol, t0)
	i := 10000
	b.ReportAllocs()
	for b.Loop() {
		c := Changes{Revision: 2, Blocks: make([]Ref, 0, 10)}
		for range 10 {
			c.Blocks = append(c.Blocks, add(i))
			i++
		}
		if d := r.Update(c, lookup(v), pol, t0); len(d.New()) != 10 {
			b.Fatalf("%d new", len(d.New()))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*10), "ns/block")
}

// Without counting reporters the receiver keeps no holders of each
// prefix: a new policy, an unblock and its end still reach every node's
// block of a prefix, by change and not by a whole read.
func TestReceiverFollowsChangesWithoutCountingReporters(t *testing.T) {
	r := NewReceiver("me", Limits{MinReporters: 1})
	v := viewOf(map[string][]Block{"a": {block(addr(1), t0, time.Hour), block(addr(2), t0, time.Hour)},
		"b": {block(addr(2), t0, time.Hour)}})
	refuse1 := Policy{Generation: 1, Check: func(p netip.Prefix) error {
		if p == addr(1) {
			return errors.New("protected")
		}
		return nil
	}}
	c := Changes{Revision: 1, Whole: true, Blocks: []Ref{{"a", addr(1)}, {"a", addr(2)}, {"b", addr(2)}}}
	if d := r.Update(c, lookup(v), refuse1, t0); d.Applied != 2 || d.Refused[RejectProtected] != 1 {
		t.Fatalf("first read: %+v", d)
	}
	update := func(c Changes, pol Policy) Decision { return r.Update(c, lookup(v), pol, t0) }
	allow := Policy{Generation: 2, Check: allowAll}
	if d := update(Changes{Revision: 2}, allow); len(d.New()) != 1 || d.New()[0].Block.Prefix != addr(1) || d.Applied != 3 {
		t.Fatalf("a new policy: %+v", d)
	}
	unblock := map[netip.Prefix]Unblock{addr(2): {Prefix: addr(2), At: t0.Add(time.Second)}}
	d := update(Changes{Revision: 3, Unblocks: unblock}, allow)
	if len(d.Remove) != 2 || d.Applied != 1 {
		t.Fatalf("an unblock of both nodes' block: %+v", d)
	}
	if d := update(Changes{Revision: 4, Unblocks: map[netip.Prefix]Unblock{}}, allow); len(d.New()) != 2 || d.Applied != 3 {
		t.Fatalf("the unblock gone: %+v", d)
	}
	// A block named twice in one change is decided once.
	v.Blocks["b"][addr(3)] = block(addr(3), t0, time.Hour)
	if d := update(Changes{Revision: 5, Blocks: []Ref{{"b", addr(3)}, {"b", addr(3)}}}, allow); len(d.Apply) != 1 || d.Applied != 4 {
		t.Fatalf("a block named twice: %+v", d)
	}
}

// Past maxTouched blocks between two Takes, the view is taken whole.
func TestManyChangesBetweenTakesAreTakenWhole(t *testing.T) {
	var tc touched
	for i := range maxTouched {
		tc.block(Ref{"a", addr(i % 256)})
	}
	if tc.whole || len(tc.blocks) != maxTouched {
		t.Fatalf("whole %v after %d", tc.whole, len(tc.blocks))
	}
	tc.block(Ref{"a", addr(1)})
	if !tc.whole || tc.blocks != nil {
		t.Fatalf("one more: whole %v, %d noted", tc.whole, len(tc.blocks))
	}
}
