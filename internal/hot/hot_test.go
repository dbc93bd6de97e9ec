package hot

import (
	"net/netip"
	"testing"
	"time"
)

type counts map[netip.Prefix]uint64

func (c counts) count(p netip.Prefix) (uint64, bool) { n, ok := c[p]; return n, ok }

var (
	a = netip.MustParsePrefix("192.0.2.1/32")
	b = netip.MustParsePrefix("198.51.100.0/24")
	c = netip.MustParsePrefix("2001:db8::/64")
)

// A noted block is followed by its counter: its rate shows from the next
// sample, busiest first, and it goes when its block does.
func TestFollowerRanksByRate(t *testing.T) {
	var f Follower
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	k := counts{a: 4, b: 1024, c: 2}
	got := f.Sample(t0, []Note{{a, 4}, {b, 1024}}, k.count)
	if len(got) != 2 || got[0].Prefix != b || got[0].Rate != 0 {
		t.Fatalf("first sample %+v, want both, by count, no rate yet", got)
	}
	k[a], k[b] = 5004, 1124
	got = f.Sample(t0.Add(time.Second), nil, k.count)
	if got[0].Prefix != a || got[0].Rate != 5000 || got[1].Rate != 100 {
		t.Fatalf("second sample %+v, want a at 5000/s, then b at 100/s", got)
	}
	// c noted later; b's block ends.
	delete(k, b)
	got = f.Sample(t0.Add(2*time.Second), []Note{{c, 2}}, k.count)
	if len(got) != 2 || got[0].Prefix != c && got[1].Prefix != c || f.Followed() != 2 {
		t.Fatalf("third sample %+v (%d followed), want a and c", got, f.Followed())
	}
	for _, s := range got {
		if s.Prefix == b {
			t.Fatal("a block that ended is still followed")
		}
	}
}

// Past Max, the least busy go; a block quiet for long goes too; a block
// made again (its count back to zero) reads no negative rate.
func TestFollowerBoundsWhatItFollows(t *testing.T) {
	f := Follower{Max: 2}
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	k := counts{a: 1, b: 1, c: 1}
	f.Sample(t0, []Note{{a, 1}, {b, 1}, {c, 1}}, k.count)
	k[a], k[b], k[c] = 100, 50, 2
	got := f.Sample(t0.Add(time.Second), nil, k.count)
	if len(got) != 2 || f.Followed() != 2 || got[0].Prefix != a || got[1].Prefix != b {
		t.Fatalf("%+v (%d followed), want a and b, the busiest", got, f.Followed())
	}
	k[a] = 3 // made again
	got = f.Sample(t0.Add(2*time.Second), nil, k.count)
	for _, s := range got {
		if s.Rate < 0 || s.Rate > 3 {
			t.Errorf("%s: rate %v after its block was made again", s.Prefix, s.Rate)
		}
	}
	got = f.Sample(t0.Add(2*time.Second+idleAfter+time.Second), nil, k.count)
	if len(got) != 0 || f.Followed() != 0 {
		t.Errorf("%+v followed after %v without a drop", got, idleAfter)
	}
}
