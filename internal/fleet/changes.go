package fleet

import (
	"maps"
	"net/netip"
	"slices"
)

// Following the view by what changed: a node notes which keys an event
// touched, and Take hands over those, so that applying one new block costs
// the same with a thousand blocks in the fleet or a hundred thousand.

// Ref names one node's block of a prefix.
type Ref struct {
	Origin string // the publishing node
	Prefix netip.Prefix
}

// Changes are what changed in a node's view since the last Take.
type Changes struct {
	Revision int64
	// Whole: the view was read whole (the first session, or after
	// etcd's history was compacted past it); Blocks names every block
	// it holds, and what the taker holds besides is gone.
	Whole bool
	// Blocks changed, added or removed: read them with Block. A block
	// changed twice may be named twice.
	Blocks []Ref
	// Members are those that joined or wrote their key again, Left those
	// that left; on a whole read, Members are all of them. Every member
	// writes its key every half minute or so: a change costs what
	// changed, not the fleet's size.
	Members map[string]Member
	Left    []string
	// Every allow or unblock, when any of them changed; nil when none
	// did. They are few beside the blocks.
	Allows   map[netip.Prefix]Allow
	Unblocks map[netip.Prefix]Unblock
}

// touched is what changed since the last Take, kept under the node's lock.
type touched struct {
	whole bool
	// blocks are named as events touch them, once or more: the receiver
	// takes each once, and a set here cost a delivery a map insert more.
	blocks           []Ref
	members          map[string]struct{} // by name
	allows, unblocks bool
}

// maxTouched bounds the blocks noted between two Takes: past it, the view
// is taken whole, which costs its size, no more than the list would.
const maxTouched = 1 << 16

// note marks what an event under key k touched; the blocks of a key are
// marked as they are dropped and put (block).
func (t *touched) note(k Key) {
	switch k.Kind {
	case KindMember:
		if t.members == nil {
			t.members = map[string]struct{}{}
		}
		t.members[k.Node] = struct{}{}
	case KindAllow:
		t.allows = true
	case KindUnblock:
		t.unblocks = true
	}
}

// block marks a block touched; a nil t notes nothing.
func (t *touched) block(r Ref) {
	switch {
	case t == nil || t.whole:
	case len(t.blocks) == maxTouched:
		t.whole, t.blocks = true, nil
	default:
		t.blocks = append(t.blocks, r)
	}
}

// room readies t for n more blocks: a pack's.
func (t *touched) room(n int) {
	if t != nil && !t.whole {
		t.blocks = slices.Grow(t.blocks, n)
	}
}

// Take returns what changed in the view since the last Take, and starts
// noting afresh.
func (n *Node) Take() Changes {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.touched
	n.touched = touched{}
	c := Changes{Revision: n.view.Revision, Whole: t.whole}
	if t.whole {
		for origin, blocks := range n.view.Blocks {
			for p := range blocks {
				c.Blocks = append(c.Blocks, Ref{Origin: origin, Prefix: p})
			}
		}
		c.Members = maps.Clone(n.view.Members)
		t.allows, t.unblocks = true, true
	} else {
		c.Blocks = t.blocks
		for name := range t.members {
			if m, ok := n.view.Members[name]; !ok {
				c.Left = append(c.Left, name)
			} else {
				if c.Members == nil {
					c.Members = map[string]Member{}
				}
				c.Members[name] = m
			}
		}
	}
	// Copied into maps never nil: nil says unchanged.
	if t.allows {
		c.Allows = maps.Collect(maps.All(n.view.Allows))
	}
	if t.unblocks {
		c.Unblocks = maps.Collect(maps.All(n.view.Unblocks))
	}
	return c
}

// Block returns origin's block of p as the view holds it now.
func (n *Node) Block(r Ref) (Block, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	b, ok := n.view.Blocks[r.Origin][r.Prefix]
	return b, ok
}

// Members returns the members as the view holds them now, and how many
// blocks this node has in the fleet.
func (n *Node) Members() (members map[string]Member, published int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.view.Members), len(n.view.Blocks[n.cfg.Node])
}
