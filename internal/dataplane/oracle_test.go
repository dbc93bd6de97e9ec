package dataplane

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// oracle decides a frame the way docs/security.md says the XDP program
// must, written from that text and not from bpf/parse.h: Go slices that
// shrink as headers are consumed, where the program does offset arithmetic
// on packet pointers. The fuzz test holds the two against each other.
//
// It knows one scan-free moment: the tracker is empty before each frame, so
// a SYN is always a new attempt that crosses no threshold.
type oracle struct {
	blocked func(netip.Addr) bool // a live block holds the (16-byte) address
	allowed func(netip.Addr) bool
	local   func(netip.Addr) bool // the host holds the (16-byte) address; it has no socket
	// ephemeral is the host's ephemeral port range (Settings.Ephemeral).
	ephemeral [2]uint16
}

// outcome is what the program does with one frame.
type outcome struct {
	verdict  uint32
	reason   DropReason // when verdict is DROP
	conn     bool       // a connection is reported
	udp      bool       // a UDP attempt on a closed port is counted
	src, dst netip.AddrPort
}

func (o outcome) String() string {
	if o.verdict == xdpDrop {
		return "DROP (" + o.reason.String() + ")"
	}
	return verdict(o.verdict)
}

func dropFor(r DropReason) outcome { return outcome{verdict: xdpDrop, reason: r} }

var passes = outcome{verdict: xdpPass}

// Header bounds of the rules.
const (
	maxVLANTags     = 2
	maxExtHeaders   = 8
	maxHeaderOffset = 2048 // from the start of the frame
)

func (o oracle) decide(frame []byte) outcome {
	if len(frame) < 14 {
		return dropFor(DropMalformed)
	}
	etype := binary.BigEndian.Uint16(frame[12:])
	rest := frame[14:]
	for tags := 0; etype == 0x8100 || etype == 0x88a8; tags++ {
		if tags == maxVLANTags {
			return dropFor(DropVLANDepth)
		}
		if len(rest) < 4 {
			return dropFor(DropMalformed)
		}
		etype = binary.BigEndian.Uint16(rest[2:])
		rest = rest[4:]
	}
	ipOffset := len(frame) - len(rest)
	switch etype {
	case 0x0800:
		return o.ipv4(rest, ipOffset)
	case 0x86dd:
		return o.ipv6(rest, ipOffset)
	}
	return passes
}

// source applies blocks and allows; ok is false when the packet is dropped.
func (o oracle) source(src netip.Addr) (outcome, bool) {
	if o.blocked(src) && !o.allowed(src) {
		return dropFor(DropBlocked), false
	}
	return outcome{}, true
}

func (o oracle) ipv4(ip []byte, offset int) outcome {
	if len(ip) < 20 || ip[0]>>4 != 4 {
		return dropFor(DropMalformed)
	}
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	if out, ok := o.source(netip.AddrFrom16(src.As16())); !ok {
		return out
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || ihl > len(ip) {
		return dropFor(DropMalformed)
	}
	datagram := ip
	if total := int(binary.BigEndian.Uint16(ip[2:])); total != 0 {
		if total < ihl {
			return dropFor(DropMalformed)
		}
		if total < len(ip) {
			datagram = ip[:total]
		}
	}
	if ip[9] != 6 && ip[9] != 17 {
		return passes
	}
	fragment := binary.BigEndian.Uint16(ip[6:])
	switch units := fragment & 0x1fff; {
	case units == 1 && ip[9] == 6:
		return dropFor(DropTinyFragment)
	case units > 0:
		return passes
	}
	first := fragment&0x2000 != 0
	if ip[9] == 17 {
		return o.udp(datagram[ihl:], offset+ihl, first, netip.AddrFrom16(dst.As16()))
	}
	return o.tcp(datagram[ihl:], offset+ihl, first, src, dst)
}

func (o oracle) ipv6(ip []byte, offset int) outcome {
	if len(ip) < 40 || ip[0]>>4 != 6 {
		return dropFor(DropMalformed)
	}
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	if out, ok := o.source(src); !ok {
		return out
	}
	datagram := ip
	if payload := int(binary.BigEndian.Uint16(ip[4:])); payload != 0 && 40+payload < len(ip) {
		datagram = ip[:40+payload]
	}
	next := ip[6]
	rest := datagram[40:]
	offset += 40
	first := false
	for walked := 0; ; walked++ {
		switch next {
		case 0, 43, 44, 51, 60: // hop-by-hop, routing, fragment, AH, destination options
		case 6:
			return o.tcp(rest, offset, first, src, dst)
		case 17:
			return o.udp(rest, offset, first, dst)
		default:
			return passes // an upper layer hbf does not read
		}
		if walked == maxExtHeaders || offset > maxHeaderOffset {
			return dropFor(DropExtDepth)
		}
		need := 2
		if next == 44 {
			need = 8
		}
		if len(rest) < need {
			return cutShort(first)
		}
		var size int
		switch next {
		case 44:
			fragment := binary.BigEndian.Uint16(rest[2:])
			units := fragment >> 3
			if units == 1 && rest[0] == 6 {
				return dropFor(DropTinyFragment)
			}
			if units > 0 {
				return passes
			}
			if fragment&1 != 0 {
				first = true
			}
			size = 8
		case 51:
			size = (int(rest[1]) + 2) * 4
		default:
			size = (int(rest[1]) + 1) * 8
		}
		next = rest[0]
		offset += size
		rest = rest[min(size, len(rest)):]
	}
}

// cutShort is the drop for a header that is not all there.
func cutShort(firstFragment bool) outcome {
	if firstFragment {
		return dropFor(DropTinyFragment)
	}
	return dropFor(DropMalformed)
}

// udp counts a datagram whose header is whole, to one of the host's
// addresses (16-byte), unless it is a late answer: from a port below 1024
// into the ephemeral range.
func (o oracle) udp(udp []byte, offset int, first bool, dst netip.Addr) outcome {
	if offset > maxHeaderOffset {
		return dropFor(DropExtDepth)
	}
	if len(udp) < 8 {
		return cutShort(first)
	}
	sport, dport := binary.BigEndian.Uint16(udp[0:]), binary.BigEndian.Uint16(udp[2:])
	late := sport < 1024 && dport >= o.ephemeral[0] && dport <= o.ephemeral[1]
	return outcome{verdict: xdpPass, udp: o.local(dst) && !late}
}

func (o oracle) tcp(tcp []byte, offset int, first bool, src, dst netip.Addr) outcome {
	if offset > maxHeaderOffset {
		return dropFor(DropExtDepth)
	}
	if len(tcp) < 20 {
		return cutShort(first)
	}
	size := int(tcp[12]>>4) * 4
	if size < 20 {
		return dropFor(DropMalformed)
	}
	if size > len(tcp) {
		return cutShort(first)
	}
	switch flags := tcp[13] & (fin | syn | rst | ack); {
	case flags == syn:
		return outcome{
			verdict: xdpPass, conn: true,
			src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:])),
			dst: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:])),
		}
	case flags&(syn|ack|rst) == 0, flags&syn != 0 && flags&(fin|rst) != 0:
		return dropFor(DropStealth)
	}
	return passes
}

// gopacketConnection is a third opinion on where a frame's addresses and
// ports are: gopacket's decoders, written by others. ok is false when they
// find no TCP header (they stop at fragments, and at options they reject).
func gopacketConnection(frame []byte) (src, dst netip.AddrPort, ok bool) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.NoCopy)
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp == nil || p.NetworkLayer() == nil {
		return src, dst, false
	}
	var s, d netip.Addr
	switch ip := p.NetworkLayer().(type) {
	case *layers.IPv4:
		s, _ = netip.AddrFromSlice(ip.SrcIP)
		d, _ = netip.AddrFromSlice(ip.DstIP)
		s, d = s.Unmap(), d.Unmap()
	case *layers.IPv6:
		s, _ = netip.AddrFromSlice(ip.SrcIP.To16())
		d, _ = netip.AddrFromSlice(ip.DstIP.To16())
	default:
		return src, dst, false
	}
	return netip.AddrPortFrom(s, uint16(tcp.SrcPort)), netip.AddrPortFrom(d, uint16(tcp.DstPort)), true
}
