package kerneltest

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
)

// Subject is a data plane under the contract.
type Subject struct {
	Rules dataplane.Rules
	// Capacity is the size of its exact-address block map.
	Capacity int
}

// Run holds a data plane to the behaviour the daemon relies on; open gives
// each case a new, empty one. Times are compared within a second: the
// kernel keeps them in its monotonic clock.
func Run(t *testing.T, open func(t *testing.T) Subject) {
	for _, c := range []struct {
		name string
		run  func(*testing.T, Subject)
	}{
		{"BlockAndLookUp", blockAndLookUp},
		{"RefusesBadPrefixes", refusesBadPrefixes},
		{"LastWriteWins", lastWriteWins},
		{"ExpiredEntriesStayUntilSwept", expiredEntriesStayUntilSwept},
		{"Extend", extend},
		{"Unblock", unblock},
		{"BatchWrites", batchWrites},
		{"BatchWritesAreAllOrNothing", batchWritesAreAllOrNothing},
		{"Walk", walk},
		{"FullMap", fullMap},
		{"Allowlist", allowlist},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, open(t)) })
	}
}

var never time.Time

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func near(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	d := a.Sub(b)
	return d < time.Second && d > -time.Second
}

func mustBlock(t *testing.T, k dataplane.Rules, p string, expires time.Time) {
	t.Helper()
	if err := k.Block(pfx(p), expires); err != nil {
		t.Fatalf("block %s: %v", p, err)
	}
}

// lookup returns the entry of exactly p, failing the test on an error.
func lookup(t *testing.T, k dataplane.Rules, p string) (dataplane.Rule, bool) {
	t.Helper()
	r, ok, err := k.LookupBlock(pfx(p))
	if err != nil {
		t.Fatalf("look up %s: %v", p, err)
	}
	return r, ok
}

func count(t *testing.T, k dataplane.Rules) int {
	t.Helper()
	n := 0
	if err := k.EachBlock(func(dataplane.Rule) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func blockAndLookUp(t *testing.T, s Subject) {
	k := s.Rules
	hour := time.Now().Add(time.Hour)
	entries := map[string]time.Time{
		"192.0.2.7/32": hour, "2001:db8::7/128": never, "198.51.100.0/24": never, "2001:db8:1::/48": hour,
	}
	before := time.Now()
	for p, exp := range entries {
		mustBlock(t, k, p, exp)
	}
	for p, exp := range entries {
		r, ok := lookup(t, k, p)
		if !ok || r.Prefix != pfx(p) || !near(r.Expires, exp) || r.Origin != dataplane.OriginOperator ||
			r.Packets != 0 || !near(r.Created, before) {
			t.Errorf("%s: %+v %v, want expiry %v, made now by the operator", p, r, ok, exp)
		}
	}
	// Exactly that prefix: not a narrower, wider or contained one.
	for _, p := range []string{"198.51.100.0/25", "198.51.100.0/23", "198.51.100.7/32", "192.0.2.0/24", "2001:db8:1::/64"} {
		if r, ok := lookup(t, k, p); ok {
			t.Errorf("%s found as %+v", p, r)
		}
	}
}

func refusesBadPrefixes(t *testing.T, s Subject) {
	k := s.Rules
	for _, p := range []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr("192.0.2.7"), 24), {}} {
		if err := k.Block(p, never); err == nil {
			t.Errorf("block %v accepted", p)
		}
		if err := k.Allow(p, never); err == nil {
			t.Errorf("allow %v accepted", p)
		}
	}
	if n := count(t, k); n != 0 {
		t.Errorf("%d entries after refused writes", n)
	}
}

// The kernel holds what was written last for a prefix: the daemon writes
// the longest of its decisions itself.
func lastWriteWins(t *testing.T, s Subject) {
	k := s.Rules
	for _, exp := range []time.Time{time.Now().Add(2 * time.Hour), time.Now().Add(time.Hour), never, time.Now().Add(time.Minute)} {
		mustBlock(t, k, "203.0.113.7/32", exp)
		mustBlock(t, k, "203.0.113.0/24", exp)
		for _, p := range []string{"203.0.113.7/32", "203.0.113.0/24"} {
			if r, _ := lookup(t, k, p); !near(r.Expires, exp) {
				t.Errorf("%s expires %v after a write of %v", p, r.Expires, exp)
			}
		}
	}
	if n := count(t, k); n != 2 {
		t.Errorf("%d entries for two prefixes written four times", n)
	}
}

func expiredEntriesStayUntilSwept(t *testing.T, s Subject) {
	k := s.Rules
	past, hour := time.Now().Add(-time.Second), time.Now().Add(time.Hour)
	mustBlock(t, k, "192.0.2.8/32", past)
	mustBlock(t, k, "198.51.100.0/24", past)
	mustBlock(t, k, "192.0.2.9/32", hour)
	if err := k.Allow(pfx("203.0.113.0/24"), past); err != nil {
		t.Fatal(err)
	}
	if r, ok := lookup(t, k, "192.0.2.8/32"); !ok || !r.Expired(time.Now()) {
		t.Errorf("an expired entry: %+v %v, want found and expired", r, ok)
	}
	if n := count(t, k); n != 3 {
		t.Errorf("walk saw %d entries, want the expired ones too", n)
	}
	st, err := k.SweepRules()
	if err != nil || st.Blocks != 2 || st.Allows != 1 {
		t.Errorf("sweep %+v, %v; want 2 blocks and 1 allow", st, err)
	}
	if _, ok := lookup(t, k, "192.0.2.9/32"); !ok || count(t, k) != 1 {
		t.Error("the sweep took a live entry or left an expired one")
	}
}

func extend(t *testing.T, s Subject) {
	k := s.Rules
	mustBlock(t, k, "192.0.2.7/32", time.Now().Add(time.Hour))
	mustBlock(t, k, "2001:db8:1::/64", time.Now().Add(time.Hour))
	for _, p := range []string{"192.0.2.7/32", "2001:db8:1::/64"} {
		before, _ := lookup(t, k, p)
		later := time.Now().Add(24 * time.Hour)
		if err := k.Extend(pfx(p), later); err != nil {
			t.Fatal(err)
		}
		r, _ := lookup(t, k, p)
		if !near(r.Expires, later) || !near(r.Created, before.Created) || r.Origin != before.Origin {
			t.Errorf("%s extended: %+v, from %+v", p, r, before)
		}
	}
	if err := k.Extend(pfx("192.0.2.8/32"), never); err == nil {
		t.Error("an absent block was extended")
	}
	if err := k.Extend(pfx("2001:db8:1::/80"), never); err == nil {
		t.Error("a prefix inside a block was extended")
	}
}

func unblock(t *testing.T, s Subject) {
	k := s.Rules
	mustBlock(t, k, "192.0.2.7/32", never)
	mustBlock(t, k, "198.51.100.0/24", never)
	mustBlock(t, k, "198.51.100.0/25", never)
	for _, c := range []struct {
		p    string
		want bool
	}{{"192.0.2.7/32", true}, {"192.0.2.7/32", false}, {"198.51.100.0/25", true}, {"203.0.113.0/24", false}} {
		if ok, err := k.Unblock(pfx(c.p)); ok != c.want || err != nil {
			t.Errorf("unblock %s: %v, %v; want %v", c.p, ok, err, c.want)
		}
	}
	if _, ok := lookup(t, k, "198.51.100.0/24"); !ok {
		t.Error("unblocking a /25 took the /24 with it")
	}
}

func batchWrites(t *testing.T, s Subject) {
	k := s.Rules
	var prefixes []netip.Prefix
	for i := range 40000 { // more than two batches
		prefixes = append(prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 32))
	}
	prefixes = append(prefixes, pfx("198.51.100.0/24"), pfx("2001:db8::/48"), pfx("2001:db8:1::7/128"))
	hour := time.Now().Add(time.Hour)
	// Each entry has its expiry: every other one two hours.
	expiry := func(i int) time.Time { return hour.Add(time.Duration(i%2) * time.Hour) }
	// The iterator may look into the data plane while it writes, as the
	// daemon's reconciliation does.
	looked := func(yield func(netip.Prefix, time.Time) bool) {
		for i, p := range prefixes {
			if _, _, err := k.LookupBlock(p); err != nil || !yield(p, expiry(i)) {
				return
			}
		}
	}
	n, err := k.BlockMany(looked)
	if err != nil || n != len(prefixes) {
		t.Fatalf("BlockMany: %d, %v; want %d", n, err, len(prefixes))
	}
	for _, i := range []int{0, 39999, 40000, len(prefixes) - 2, len(prefixes) - 1} {
		if r, ok, _ := k.LookupBlock(prefixes[i]); !ok || !near(r.Expires, expiry(i)) {
			t.Errorf("%s after BlockMany: %+v %v; want it until %v", prefixes[i], r, ok, expiry(i))
		}
	}
	absent := pfx("203.0.113.9/32")
	gone := append(slices.Clone(prefixes[:20000]), absent, pfx("2001:db8::/48"))
	n, err = k.UnblockMany(func(yield func(netip.Prefix) bool) {
		for _, p := range gone {
			if _, _, err := k.LookupBlock(p); err != nil || !yield(p) {
				return
			}
		}
	})
	if err != nil || n != 20001 {
		t.Errorf("UnblockMany: %d, %v; want 20001 (the absent one skipped)", n, err)
	}
	if got := count(t, k); got != len(prefixes)-20001 {
		t.Errorf("%d entries left, want %d", got, len(prefixes)-20001)
	}
}

// A batch the data plane refuses keeps none of its entries: also not one
// it replaced, which the caller writes again if a decision holds it.
func batchWritesAreAllOrNothing(t *testing.T, s Subject) {
	k := s.Rules
	mustBlock(t, k, "192.0.2.7/32", never)
	mustBlock(t, k, "192.0.2.8/32", never)
	var prefixes []netip.Prefix
	prefixes = append(prefixes, pfx("192.0.2.7/32"))
	for i := range 20000 {
		prefixes = append(prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 32))
	}
	prefixes = append(prefixes, pfx("198.51.100.0/24"), netip.PrefixFrom(netip.MustParseAddr("203.0.113.7"), 24))
	if n, err := k.BlockMany(dataplane.Until(slices.Values(prefixes), never)); err == nil || n != 0 {
		t.Fatalf("BlockMany with a prefix with host bits: %d, %v; want 0 and an error", n, err)
	}
	if _, ok := lookup(t, k, "192.0.2.8/32"); !ok || count(t, k) != 1 {
		t.Errorf("after a refused batch %d entries, want only the one it did not name", count(t, k))
	}
}

func walk(t *testing.T, s Subject) {
	k := s.Rules
	want := []string{"192.0.2.7/32", "2001:db8::7/128", "198.51.100.0/24", "2001:db8:1::/48"}
	for _, p := range want {
		mustBlock(t, k, p, never)
	}
	var got []string
	if err := k.EachBlock(func(r dataplane.Rule) error { got = append(got, r.Prefix.String()); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("walk saw %v, want %v", got, want)
	}
	stop := errors.New("stop")
	n := 0
	err := k.EachBlock(func(dataplane.Rule) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("a walk told to stop: %d calls, %v", n, err)
	}
}

func fullMap(t *testing.T, s Subject) {
	k := s.Rules
	mustBlock(t, k, "192.0.2.7/32", never)
	fill := func(yield func(netip.Prefix) bool) {
		for i := range s.Capacity - 1 {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			if !yield(netip.PrefixFrom(a, 32)) {
				return
			}
		}
	}
	if n, err := k.BlockMany(dataplane.Until(fill, never)); err != nil || n != s.Capacity-1 {
		t.Fatalf("filling the map: %d, %v", n, err)
	}
	if err := k.Block(pfx("192.0.2.8/32"), never); err == nil {
		t.Error("a full map took a new address")
	}
	later := time.Now().Add(time.Hour)
	if err := k.Block(pfx("192.0.2.7/32"), later); err != nil {
		t.Errorf("a full map refused to replace an entry: %v", err)
	}
	if n, err := k.BlockMany(dataplane.Until(slices.Values([]netip.Prefix{pfx("192.0.2.8/32"), pfx("192.0.2.9/32")}), never)); err == nil || n != 0 {
		t.Errorf("a full map took a batch: %d, %v", n, err)
	}
	if _, ok := lookup(t, k, "192.0.2.8/32"); ok {
		t.Error("a refused batch left an entry")
	}
	// Prefixes have a map of their own, and so have IPv6 addresses.
	mustBlock(t, k, "198.51.100.0/24", never)
	mustBlock(t, k, "2001:db8::8/128", never)
	if n, err := k.UnblockMany(slices.Values([]netip.Prefix{pfx("10.0.0.0/32")})); n != 1 || err != nil {
		t.Fatalf("UnblockMany: %d, %v", n, err)
	}
	if err := k.Block(pfx("192.0.2.8/32"), never); err != nil {
		t.Errorf("no room after an entry left: %v", err)
	}
}

func allowlist(t *testing.T, s Subject) {
	k := s.Rules
	// The daemon fits its protected set to this room.
	if n := k.Capacity().Allows; n != AllowCapacity {
		t.Errorf("the allowlist holds %d entries, want the program's %d", n, AllowCapacity)
	}
	hour := time.Now().Add(time.Hour)
	for p, exp := range map[string]time.Time{"192.0.2.0/24": never, "2001:db8::1/128": hour} {
		if err := k.Allow(pfx(p), exp); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.Allow(pfx("192.0.2.0/24"), hour); err != nil {
		t.Fatal(err)
	}
	rules, err := k.Allows()
	if err != nil || len(rules) != 2 {
		t.Fatalf("allows %+v, %v", rules, err)
	}
	for _, r := range rules {
		if !near(r.Expires, hour) {
			t.Errorf("%s expires %v, want the last write's %v", r.Prefix, r.Expires, hour)
		}
	}
	for _, c := range []struct {
		p    string
		want bool
	}{{"192.0.2.0/24", true}, {"192.0.2.0/24", false}, {"192.0.2.0/25", false}} {
		if ok, err := k.Disallow(pfx(c.p)); ok != c.want || err != nil {
			t.Errorf("disallow %s: %v, %v; want %v", c.p, ok, err, c.want)
		}
	}
	if rules, _ := k.Allows(); len(rules) != 1 || rules[0].Prefix != pfx("2001:db8::1/128") {
		t.Errorf("allows after a disallow: %+v", rules)
	}
}
