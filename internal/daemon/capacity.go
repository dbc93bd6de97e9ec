package daemon

import (
	"fmt"

	"github.com/hbf-firewall/hbf/internal/dataplane"
)

// errListsTooBig is the lists' need beyond the room the block maps keep
// for lists.
type errListsTooBig struct {
	what        string // "IPv4 addresses", "IPv6 addresses" or "prefixes"
	need, room  int
	capacity    int
	flag        string
	minCapacity int
}

func (e *errListsTooBig) Error() string {
	return fmt.Sprintf("the blocklists hold %d %s, more than the %d the kernel keeps for lists "+
		"(%s %d, less room for scan, manual and fleet blocks): raise %s to %d or more",
		e.need, e.what, e.room, e.flag, e.capacity, e.flag, e.minCapacity)
}

// listsFit says, in one line, when lists would not fit in the room the
// kernel's block maps of capacity c keep for lists. Entries in several
// lists are counted once per list: a list fits alone or not at all.
func listsFit(lists []*listSource, c dataplane.Capacity) error {
	v4, v6, prefixes := 0, 0, 0
	for _, l := range lists {
		e4, e6 := l.list.Exact()
		v4, v6 = v4+e4, v6+e6
		prefixes += l.list.Len() - e4 - e6
	}
	room := c.ForLists()
	// Each family has a map of its own, of the same capacity.
	for _, exact := range []struct {
		what string
		n    int
	}{{"IPv4 addresses", v4}, {"IPv6 addresses", v6}} {
		if exact.n > room.Blocks {
			return &errListsTooBig{what: exact.what, need: exact.n, room: room.Blocks, capacity: c.Blocks,
				flag: "--max-blocks", minCapacity: capacityFor(exact.n)}
		}
	}
	if prefixes > room.BlockPrefixes {
		return &errListsTooBig{what: "prefixes", need: prefixes, room: room.BlockPrefixes, capacity: c.BlockPrefixes,
			flag: "--max-block-prefixes", minCapacity: capacityFor(prefixes)}
	}
	return nil
}

// capacityFor is the least capacity whose room for lists holds n.
func capacityFor(n int) int {
	c := n
	for (dataplane.Capacity{Blocks: c}).ForLists().Blocks < n {
		c++
	}
	return c
}
