// Package fleet shares blocks among hbf nodes through etcd. etcd does the
// distribution (a consistent, watchable key space); this package decides
// what a node writes, and reads what the others wrote. Each node writes only
// under its own subtree:
//
//	<prefix>/members/<node>             membership, kept alive by a lease
//	<prefix>/blocks/<node>/<cidr>       a block the node publishes
//	<prefix>/blocks/<node>/pack-<id>    blocks the node published together
//	<prefix>/admin/allows/<cidr>        a fleet-wide allowlist entry
//	<prefix>/admin/unblocks/<cidr>      a fleet-wide unblock: a tombstone
//
// A CIDR's "/" is escaped in keys (198.51.100.0%2F24). Values are JSON with
// a version; expiry is the value's absolute expires_at, never a lease's
// TTL, which etcd 3.4 resets on leader change and restart.
package fleet

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Layout names the keys of one fleet.
type Layout struct {
	Prefix string // "/hbf": no trailing slash
}

// NewLayout checks prefix: it starts with "/", and is not "/" alone.
func NewLayout(prefix string) (Layout, error) {
	p := strings.TrimSuffix(prefix, "/")
	if !strings.HasPrefix(p, "/") || p == "" {
		return Layout{}, fmt.Errorf("%q: must be a key path such as /hbf", prefix)
	}
	return Layout{Prefix: p}, nil
}

// CheckNodeName refuses what cannot be one path element of a key: hosts
// are named with letters, digits, dots, hyphens and underscores.
func CheckNodeName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("%q: must be 1 to 253 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("%q: only letters, digits, '.', '-' and '_' may name a node", name)
		}
	}
	return nil
}

func (l Layout) members() string  { return l.Prefix + "/members/" }
func (l Layout) blocks() string   { return l.Prefix + "/blocks/" }
func (l Layout) allows() string   { return l.Prefix + "/admin/allows/" }
func (l Layout) unblocks() string { return l.Prefix + "/admin/unblocks/" }

// Member is the key of node's membership.
func (l Layout) Member(node string) string { return l.members() + node }

// NodeBlocks is the subtree of node's blocks.
func (l Layout) NodeBlocks(node string) string { return l.blocks() + node + "/" }

// Block is the key of node's block of p.
func (l Layout) Block(node string, p netip.Prefix) string { return l.NodeBlocks(node) + escape(p) }

// Pack is the key of node's pack id: blocks published together, in one
// value, so that a burst costs every member one key to read, not one a
// block.
func (l Layout) Pack(node, id string) string { return l.NodeBlocks(node) + packPrefix + id }

const packPrefix = "pack-"

// AdminAllow is the key of a fleet-wide allow of p.
func (l Layout) AdminAllow(p netip.Prefix) string { return l.allows() + escape(p) }

// AdminUnblock is the key of a fleet-wide unblock of p.
func (l Layout) AdminUnblock(p netip.Prefix) string { return l.unblocks() + escape(p) }

// escape writes p as one path element: as url.PathEscape would, but a
// prefix holds no other character it escapes, and keys are made and read
// for every event of every member.
func escape(p netip.Prefix) string { return strings.Replace(p.String(), "/", "%2F", 1) }

// Kind is what a key of the fleet holds.
type Kind int

const (
	KindMember Kind = iota + 1
	KindBlock
	KindAllow
	KindUnblock
	KindPack
)

// Key is a key of the fleet, parsed.
type Key struct {
	Kind   Kind
	Node   string       // members and blocks
	Prefix netip.Prefix // blocks, allows and unblocks
	Pack   string       // packs: the id
}

// ErrOutside: a key under the fleet's prefix that no layout rule makes.
var ErrOutside = errors.New("not a key of the fleet's layout")

// Parse reads a key of the fleet. Every member parses every key the fleet
// writes: a good key costs no allocation.
func (l Layout) Parse(key string) (Key, error) {
	bad := func(why string) (Key, error) { return Key{}, fmt.Errorf("%s: %w: %s", key, ErrOutside, why) }
	rest, ok := strings.CutPrefix(key, l.Prefix)
	if !ok {
		return bad("unknown subtree")
	}
	if node, ok := strings.CutPrefix(rest, "/members/"); ok {
		if CheckNodeName(node) != nil {
			return bad("no node name")
		}
		return Key{Kind: KindMember, Node: node}, nil
	}
	if rest, ok := strings.CutPrefix(rest, "/blocks/"); ok {
		node, cidr, ok := strings.Cut(rest, "/")
		if !ok || CheckNodeName(node) != nil {
			return bad("no node name")
		}
		if id, ok := strings.CutPrefix(cidr, packPrefix); ok {
			if !validPackID(id) {
				return bad("a pack is named by letters and digits")
			}
			return Key{Kind: KindPack, Node: node, Pack: id}, nil
		}
		p, err := unescape(cidr)
		if err != nil {
			return bad(err.Error())
		}
		return Key{Kind: KindBlock, Node: node, Prefix: p}, nil
	}
	kind := KindAllow
	admin, ok := strings.CutPrefix(rest, "/admin/allows/")
	if !ok {
		if admin, ok = strings.CutPrefix(rest, "/admin/unblocks/"); !ok {
			return bad("unknown subtree")
		}
		kind = KindUnblock
	}
	p, err := unescape(admin)
	if err != nil {
		return bad(err.Error())
	}
	return Key{Kind: kind, Prefix: p}, nil
}

func validPackID(id string) bool {
	if id == "" || len(id) > 32 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// unescape reads a key's last element as a prefix, written as escape does
// and nothing else: "10.0.0.0%2F8", never "10.0.0.0%2F08".
func unescape(s string) (netip.Prefix, error) {
	addr, bits, _ := strings.Cut(s, "%2F")
	bad := func() (netip.Prefix, error) {
		return netip.Prefix{}, fmt.Errorf("%q is not a prefix as hbf writes one", strings.Replace(s, "%2F", "/", 1))
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return bad()
	}
	n, err := strconv.Atoi(bits)
	if err != nil {
		return bad()
	}
	p := netip.PrefixFrom(a, n)
	var buf [64]byte
	canonical := p.AppendTo(buf[:0]) // "addr/bits"
	if !p.IsValid() || p.Masked() != p || len(canonical) != len(addr)+1+len(bits) ||
		string(canonical[:len(addr)]) != addr || string(canonical[len(addr)+1:]) != bits {
		return bad()
	}
	return p, nil
}
