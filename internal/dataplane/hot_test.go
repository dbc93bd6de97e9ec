package dataplane

import (
	"slices"
	"testing"
	"time"
)

// While watched, a block is noted when its drop count reaches a mark (the
// powers of two to 1024, then every 1024th), by its prefix, the count of
// its last mark with it; a drain forgets what it returns. Unwatched,
// nothing is noted.
func TestHotBlocksAreNotedAtMarks(t *testing.T) {
	d := newTestDP(t, defaults)
	hour := time.Now().Add(time.Hour)
	for _, p := range []string{"198.51.100.7/32", "203.0.113.0/24", "2001:db8:bad::/48", "2001:db8::9/128"} {
		if err := d.Block(mustPrefix(p), hour); err != nil {
			t.Fatal(err)
		}
	}
	drop := func(src string, n int) {
		t.Helper()
		for range n {
			expectVerdict(t, d.run(tcpSYN(src, "192.0.2.1", 40000, 443)), xdpDrop, src)
		}
	}
	drain := func() []Hot {
		t.Helper()
		hot, err := d.DrainHot()
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(hot, func(a, b Hot) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
		return hot
	}

	drop("198.51.100.7", 3)
	if hot := drain(); len(hot) != 0 {
		t.Fatalf("noted while unwatched: %+v", hot)
	}
	if err := d.WatchHot(true); err != nil {
		t.Fatal(err)
	}
	drop("198.51.100.7", 1) // the 4th: a mark
	drop("198.51.100.7", 2) // 5th, 6th: none
	drop("203.0.113.77", 1)
	drop("2001:db8:bad::1", 3)
	drop("2001:db8::9", 1)
	want := []Hot{{mustPrefix("198.51.100.7/32"), 4}, {mustPrefix("203.0.113.0/24"), 1},
		{mustPrefix("2001:db8::9/128"), 1}, {mustPrefix("2001:db8:bad::/48"), 2}}
	if got := drain(); !slices.Equal(got, want) {
		t.Fatalf("noted %+v, want %+v", got, want)
	}
	if got := drain(); len(got) != 0 {
		t.Fatalf("a second drain: %+v, want nothing new", got)
	}
	// Past 1024, every 1024th: 2048 is the last mark of 2100.
	drop("198.51.100.7", 2100-6)
	if got := drain(); len(got) != 1 || got[0].Packets != 2048 {
		t.Fatalf("after 2100 drops: %+v, want the mark of 2048", got)
	}
	if err := d.WatchHot(false); err != nil {
		t.Fatal(err)
	}
	drop("198.51.100.7", 1024)
	if got := drain(); len(got) != 0 {
		t.Errorf("noted once unwatched again: %+v", got)
	}
}
