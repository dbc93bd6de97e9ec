package protect

import (
	"net/netip"
	"slices"
)

// MaxMemberAddrs bounds the addresses of one member this host protects: a
// member publishes its own key, and a compromised one must not make the
// fleet protect whatever it names.
const MaxMemberAddrs = 16

// Why a member's published address is not protected, the reasons of
// hbf_fleet_rejected_total.
const (
	RejectMemberNotGlobal = "member_not_global" // loopback, link-local, multicast or unspecified
	RejectMemberTooMany   = "member_too_many"   // past MaxMemberAddrs of its member
	RejectMemberOutside   = "member_outside"    // outside --fleet-member-prefixes
)

// MemberRejects are the reasons Members refuses an address.
var MemberRejects = []string{RejectMemberNotGlobal, RejectMemberTooMany, RejectMemberOutside}

// Members are the entries of the addresses the fleet's members publish
// that this host protects: each an exact host entry of a global unicast
// address, at most MaxMemberAddrs a member, inside within when it names
// any. It counts the rest, by reason.
func Members(members map[string][]netip.Addr, within []netip.Prefix) ([]Entry, map[string]int) {
	var out []Entry
	refused := map[string]int{}
	names := make([]string, 0, len(members))
	for name := range members {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		addrs := make([]netip.Addr, 0, len(members[name]))
		for _, a := range members[name] {
			addrs = append(addrs, a.Unmap().WithZone(""))
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		kept := 0
		for _, a := range slices.Compact(addrs) {
			switch {
			case !a.IsGlobalUnicast():
				refused[RejectMemberNotGlobal]++
			case len(within) > 0 && !slices.ContainsFunc(within, func(p netip.Prefix) bool { return p.Contains(a) }):
				refused[RejectMemberOutside]++
			case kept == MaxMemberAddrs:
				refused[RejectMemberTooMany]++
			default:
				kept++
				out = append(out, Entry{Prefix: netip.PrefixFrom(a, a.BitLen()), Kind: KindMember,
					Why: "an address of " + name + ", a member of the fleet"})
			}
		}
	}
	return out, refused
}
