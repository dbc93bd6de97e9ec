package dataplane

import "fmt"

// Capacity is how many entries the block maps hold.
type Capacity struct {
	Blocks        int // exact addresses of each family (blocks4, blocks6)
	BlockPrefixes int // prefixes (block_prefixes)
	// Allows is the allowlist's (allow_prefixes): fixed by the program,
	// never sized by Load.
	Allows int
}

// DefaultCapacity: a million exact addresses of each family (16 MiB of
// buckets a map from the start, ~100 bytes an entry as entries are added)
// and 2^18 prefixes.
var DefaultCapacity = Capacity{Blocks: 1 << 20, BlockPrefixes: 1 << 18}

// Capacity bounds.
const (
	MinCapacity = 1024
	MaxCapacity = 1 << 26
)

// withDefaults fills the zero fields.
func (c Capacity) withDefaults() Capacity {
	if c.Blocks == 0 {
		c.Blocks = DefaultCapacity.Blocks
	}
	if c.BlockPrefixes == 0 {
		c.BlockPrefixes = DefaultCapacity.BlockPrefixes
	}
	return c
}

// Validate says which size the kernel's maps cannot take.
func (c Capacity) Validate() error {
	c = c.withDefaults()
	if c.Blocks < MinCapacity || c.Blocks > MaxCapacity {
		return fmt.Errorf("block map capacity %d: must be between %d and %d", c.Blocks, MinCapacity, MaxCapacity)
	}
	if c.BlockPrefixes < MinCapacity || c.BlockPrefixes > MaxCapacity {
		return fmt.Errorf("prefix map capacity %d: must be between %d and %d", c.BlockPrefixes, MinCapacity, MaxCapacity)
	}
	return nil
}

// ForLists is how much of the capacity lists may take: a sixteenth, at
// most 32,768 entries, stays free for the blocks the program makes of
// scanners (30 a minute by default, each for an hour) and for manual and
// fleet blocks, so that a list that fills its room never leaves a scanner
// unblockable. The default capacity takes a million-address list.
func (c Capacity) ForLists() Capacity {
	room := func(n int) int { return n - min(n/16, listReserveMax) }
	return Capacity{Blocks: room(c.Blocks), BlockPrefixes: room(c.BlockPrefixes)}
}

// listReserveMax bounds what ForLists keeps free.
const listReserveMax = 32768

// Capacity is how many entries the block maps hold.
func (d *Dataplane) Capacity() Capacity {
	return Capacity{Blocks: int(d.objs.Blocks4.MaxEntries()), BlockPrefixes: int(d.objs.BlockPrefixes.MaxEntries()),
		Allows: int(d.objs.AllowPrefixes.MaxEntries())}
}
