// Package natports reads the ports the host serves without a socket of its
// own: ports its NAT rules forward (containers published with Docker's -p,
// Kubernetes NodePorts and hostPorts, any nftables or iptables-nft DNAT or
// redirect), and IPVS virtual services. A probe of such a port reaches a
// server, so it is an open port, though no socket of the host holds it.
package natports

import (
	"encoding/binary"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"

	"github.com/hbf-firewall/hbf/internal/ports"
)

// table is one nftables table's rules, chain by chain, and how to read its
// sets.
type table struct {
	chains map[string][]*nftables.Rule
	// set returns a named (or anonymous) set's port ranges; ok is false
	// when the set does not hold plain ports.
	set func(name string) (r []portRange, ok bool)
}

type portRange struct{ lo, hi uint16 }

// served is the ports a table's rules forward: a rule that matches a
// destination port and forwards the packet (DNAT, redirect, TPROXY), or
// jumps to a chain that does. Rules that forward without matching a port
// (Docker's "-m addrtype --dst-type LOCAL -j DOCKER") only dispatch: the
// ports are in the chains they reach.
func (t table) served() []ports.Port {
	forwards := t.forwardingChains()
	var out []ports.Port
	for _, rules := range t.chains {
		for _, r := range rules {
			if !ruleForwards(r, forwards) {
				continue
			}
			out = append(out, t.matchedPorts(r)...)
		}
	}
	return out
}

// forwardingChains are the chains that forward packets, themselves or
// through the chains they jump to.
func (t table) forwardingChains() map[string]bool {
	fwd := map[string]bool{}
	for changed := true; changed; {
		changed = false
		for name, rules := range t.chains {
			if fwd[name] {
				continue
			}
			if slices.ContainsFunc(rules, func(r *nftables.Rule) bool { return ruleForwards(r, fwd) }) {
				fwd[name] = true
				changed = true
			}
		}
	}
	return fwd
}

// ruleForwards reports whether the rule forwards what it matches, or
// hands it to a chain that does.
func ruleForwards(r *nftables.Rule, forwarding map[string]bool) bool {
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.NAT:
			if e.Type == expr.NATTypeDestNAT {
				return true
			}
		case *expr.Redir, *expr.TProxy:
			return true
		case *expr.Target: // iptables-nft keeps xtables targets
			if e.Name == "DNAT" || e.Name == "REDIRECT" || e.Name == "TPROXY" {
				return true
			}
		case *expr.Verdict:
			if (e.Kind == expr.VerdictJump || e.Kind == expr.VerdictGoto) && forwarding[e.Chain] {
				return true
			}
		}
	}
	return false
}

// What a register holds, as a rule's expressions load it.
type regValue int

const (
	regOther regValue = iota
	regProto          // the transport protocol
	regDport          // the transport header's destination port
)

// matchedPorts is the destination ports a rule matches, of the protocol it
// matches (both when it names none). Negated matches, verdict maps and
// xtables' multiport are not read: their ports count as closed.
func (t table) matchedPorts(r *nftables.Rule) []ports.Port {
	regs := map[uint32]regValue{}
	tcp, udp := true, true
	var ranges []portRange
	matched := false
	bounds, bounded := portRange{0, 0xffff}, false
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if !e.SourceRegister {
				regs[e.Register] = map[bool]regValue{true: regProto}[e.Key == expr.MetaKeyL4PROTO]
			}
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				continue
			}
			v := regOther
			switch {
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2:
				v = regDport
			case e.Base == expr.PayloadBaseNetworkHeader && e.Len == 1 && (e.Offset == 9 || e.Offset == 6):
				v = regProto // IPv4's protocol, IPv6's next header
			}
			regs[e.DestRegister] = v
		case *expr.Cmp:
			switch regs[e.Register] {
			case regProto:
				if e.Op == expr.CmpOpEq && len(e.Data) == 1 {
					tcp, udp = e.Data[0] == 6, e.Data[0] == 17
				}
			case regDport:
				if len(e.Data) != 2 {
					continue
				}
				p := binary.BigEndian.Uint16(e.Data)
				// nft writes "dport 161-162" as >= 161 and <= 162.
				switch e.Op {
				case expr.CmpOpEq:
					ranges, matched = append(ranges, portRange{p, p}), true
				case expr.CmpOpGte:
					bounds.lo, bounded = p, true
				case expr.CmpOpLte:
					bounds.hi, bounded = p, true
				}
			}
		case *expr.Range:
			if e.Op == expr.CmpOpEq && regs[e.Register] == regDport && len(e.FromData) == 2 && len(e.ToData) == 2 {
				ranges = append(ranges, portRange{binary.BigEndian.Uint16(e.FromData), binary.BigEndian.Uint16(e.ToData)})
				matched = true
			}
		case *expr.Lookup:
			if e.Invert || e.IsDestRegSet || regs[e.SourceRegister] != regDport {
				continue
			}
			if rs, ok := t.set(e.SetName); ok {
				ranges, matched = append(ranges, rs...), true
			}
		case *expr.Match: // iptables-nft keeps xtables matches
			switch info := e.Info.(type) {
			case *xt.Tcp:
				tcp, udp = true, false
				if info.InvFlags&xt.TcpInvDestPorts == 0 && info.DstPorts != [2]uint16{0, 0xffff} {
					ranges, matched = append(ranges, portRange{info.DstPorts[0], info.DstPorts[1]}), true
				}
			case *xt.Udp:
				tcp, udp = false, true
				if info.InvFlags&xt.UdpInvDestPorts == 0 && info.DstPorts != [2]uint16{0, 0xffff} {
					ranges, matched = append(ranges, portRange{info.DstPorts[0], info.DstPorts[1]}), true
				}
			}
		}
	}
	if bounded && bounds.lo <= bounds.hi {
		ranges, matched = append(ranges, bounds), true
	}
	if !matched {
		return nil
	}
	var out []ports.Port
	for _, pr := range ranges {
		for n := uint32(pr.lo); n <= uint32(pr.hi); n++ {
			if tcp {
				out = append(out, ports.Port{Num: uint16(n), Proto: ports.TCP})
			}
			if udp {
				out = append(out, ports.Port{Num: uint16(n), Proto: ports.UDP})
			}
		}
	}
	return out
}

// setRanges turns a set's elements into port ranges: plain ports, or the
// intervals of an interval set, whose ends are exclusive.
func setRanges(s *nftables.Set, elems []nftables.SetElement) ([]portRange, bool) {
	if s.IsMap || s.Concatenation || s.KeyType.Bytes != 2 {
		return nil, false
	}
	var out []portRange
	if !s.Interval {
		for _, e := range elems {
			if len(e.Key) == 2 {
				p := binary.BigEndian.Uint16(e.Key)
				out = append(out, portRange{p, p})
			}
		}
		return out, true
	}
	slices.SortFunc(elems, func(a, b nftables.SetElement) int { return slices.Compare(a.Key, b.Key) })
	start, open := uint16(0), false
	for _, e := range elems {
		if len(e.Key) != 2 {
			continue
		}
		p := binary.BigEndian.Uint16(e.Key)
		switch {
		case !e.IntervalEnd:
			if open {
				out = append(out, portRange{start, p - 1})
			}
			start, open = p, true
		case open && p > start:
			out = append(out, portRange{start, p - 1})
			open = false
		}
	}
	if open {
		out = append(out, portRange{start, 0xffff})
	}
	return out, true
}
