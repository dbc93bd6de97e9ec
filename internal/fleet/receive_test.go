package fleet

import (
	"errors"
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
	d := r.Decide(v, allowAll, t0.Add(time.Minute))
	if got := applied(d); len(got) != 2 || !got["a 198.51.100.2/32"] || !got["b 198.51.100.4/32"] {
		t.Errorf("applied %v: want a's live block and b's, neither its own nor an expired one", got)
	}
	if len(d.New) != 2 {
		t.Errorf("new %+v", d.New)
	}
	if d := r.Decide(v, allowAll, t0.Add(2*time.Minute)); len(d.New) != 0 || len(d.Apply) != 2 {
		t.Errorf("the second look: %d applied, %d new; want 2 and none", len(d.Apply), len(d.New))
	}
}

func TestReceiverHonoursTheFleetsUnblocks(t *testing.T) {
	r := NewReceiver("me", Limits{MinReporters: 1})
	v := viewOf(map[string][]Block{"a": {block(addr(2), t0, time.Hour)}, "b": {block(addr(2), t0.Add(time.Hour), 2*time.Hour)}})
	v.Unblocks[addr(2)] = Unblock{Prefix: addr(2), At: t0.Add(time.Minute)}
	got := applied(r.Decide(v, allowAll, t0.Add(90*time.Minute)))
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
	d := r.Decide(v, allowAll, t0)
	if got := applied(d); len(got) != 1 || !got["a 198.51.100.9/32"] || d.Pending != 1 {
		t.Errorf("one reporter: applied %v, %d pending", got, d.Pending)
	}
	v.Blocks["b"] = map[netip.Prefix]Block{addr(2): block(addr(2), t0, time.Hour)}
	if got := applied(r.Decide(v, allowAll, t0)); !got["a 198.51.100.2/32"] || !got["b 198.51.100.2/32"] {
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
	d := r.Decide(v, check, t0)
	if len(d.Apply) != 0 || d.Refused[RejectProtected] != 1 || d.Refused[RejectTooWide] != 1 {
		t.Errorf("applied %v, refused %v", applied(d), d.Refused)
	}
	if d := r.Decide(v, check, t0); len(d.Refused) != 0 {
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
	d := r.Decide(v, allowAll, t0.Add(10*time.Second))
	got := applied(d)
	if len(got) != 4 || !got["a 198.51.100.1/32"] || !got["a 198.51.100.3/32"] || !got["b 198.51.100.100/32"] ||
		d.Refused[RejectRateLimited] != 5 {
		t.Errorf("the first minute: applied %v, refused %v; want a's 3 oldest and b's", got, d.Refused)
	}
	d = r.Decide(v, allowAll, t0.Add(80*time.Second))
	if got := applied(d); len(got) != 6 || d.Refused[RejectQuota] != 3 {
		t.Errorf("the next minute: applied %v, refused %v; want a at its quota of 5", got, d.Refused)
	}
}
