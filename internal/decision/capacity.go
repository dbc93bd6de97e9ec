package decision

import (
	"cmp"
	"fmt"
	"net/netip"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/sources"
)

// ListsTooBigError is the lists' need beyond the room the block maps keep
// for lists.
type ListsTooBigError struct {
	What     string // "IPv4 addresses", "IPv6 addresses" or "prefixes"
	Prefixes bool   // the prefix map's room, else an exact-address map's
	Need     int
	Room     int
	Capacity int
	// MinCapacity is the least capacity whose room holds Need.
	MinCapacity int
	// Setting names what an operator raises, the daemon's flag; "": the
	// capacity.
	Setting string
}

func (e *ListsTooBigError) Error() string {
	setting := cmp.Or(e.Setting, "the capacity")
	return fmt.Sprintf("the blocklists hold %d %s, more than the %d the kernel keeps for lists "+
		"(%s %d, less room for scan, manual and fleet blocks): raise %s to %d or more",
		e.Need, e.What, e.Room, setting, e.Capacity, setting, e.MinCapacity)
}

// ListsFit says, in one line, when lists would not fit in the room the
// kernel's block maps of capacity c keep for lists. Entries in several
// lists are counted once per list: a list fits alone or not at all. more
// are entries of other sources sized as lists: CrowdSec's decisions.
func ListsFit(lists []*sources.Source, c dataplane.Capacity, more ...netip.Prefix) error {
	v4, v6, prefixes := 0, 0, 0
	for _, l := range lists {
		e4, e6 := l.List.Exact()
		v4, v6 = v4+e4, v6+e6
		prefixes += l.List.Len() - e4 - e6
	}
	for _, p := range more {
		switch {
		case !p.IsSingleIP():
			prefixes++
		case p.Addr().Is4():
			v4++
		default:
			v6++
		}
	}
	room := c.ForLists()
	// Each family has a map of its own, of the same capacity.
	for _, exact := range []struct {
		what string
		n    int
	}{{"IPv4 addresses", v4}, {"IPv6 addresses", v6}} {
		if exact.n > room.Blocks {
			return &ListsTooBigError{What: exact.what, Need: exact.n, Room: room.Blocks, Capacity: c.Blocks,
				MinCapacity: capacityFor(exact.n)}
		}
	}
	if prefixes > room.BlockPrefixes {
		return &ListsTooBigError{What: "prefixes", Prefixes: true, Need: prefixes, Room: room.BlockPrefixes,
			Capacity: c.BlockPrefixes, MinCapacity: capacityFor(prefixes)}
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
