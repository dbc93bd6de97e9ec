package dataplane

import (
	"encoding/binary"
	"net/netip"
)

// TCP flags as on the wire.
const (
	fin = 0x01
	syn = 0x02
	rst = 0x04
	psh = 0x08
	ack = 0x10
	urg = 0x20
	ece = 0x40
	cwr = 0x80
)

// frame describes a test packet; bytes() builds it as a NIC would hand it to
// XDP.
type frame struct {
	src, dst     netip.Addr
	sport, dport uint16
	flags        uint8
	seq          uint32
	vlans        []uint16 // outermost first; 802.1ad for all but the last
	tpids        []uint16 // when set, the TPID of each tag instead
	ipOptions    []byte   // IPv4 only; padded to 4 bytes
	ext          []ext6   // IPv6 only: extension headers in order
	fragOffset   uint16   // IPv4 only, in 8-byte units
	moreFrags    bool     // IPv4 only
	proto        uint8    // 0: TCP, or UDP when udp is set
	udp          bool     // a UDP header (sport, dport) before the payload
	tcpOptions   []byte   // padded to 4 bytes
	payload      []byte
}

// ext6 is an IPv6 extension header: hop-by-hop (0), routing (43), fragment
// (44, with fragOff and more), AH (51) or destination options (60).
type ext6 struct {
	typ     uint8
	fragOff uint16
	more    bool
	units   uint8 // hop-by-hop, routing, destination options: the length field (default 1)
}

func (e ext6) bytes(next uint8) []byte {
	switch e.typ {
	case 44:
		h := make([]byte, 8)
		h[0] = next
		v := e.fragOff << 3
		if e.more {
			v |= 1
		}
		binary.BigEndian.PutUint16(h[2:], v)
		return h
	case 51:
		h := make([]byte, 16) // length in 4-byte units, minus 2
		h[0], h[1] = next, 2
		return h
	default:
		units := max(e.units, 1)
		h := make([]byte, (int(units)+1)*8) // length in 8-byte units, minus 1
		h[0], h[1] = next, units
		for rest := h[2:]; len(rest) > 1; { // PadN options fill it; zeros are Pad1
			n := min(len(rest)-2, 255)
			rest[0], rest[1] = 1, byte(n)
			rest = rest[2+n:]
		}
		return h
	}
}

func tcpSYN(src, dst string, sport, dport uint16) frame {
	return frame{
		src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst),
		sport: sport, dport: dport, flags: syn, seq: uint32(sport)<<16 | uint32(dport),
	}
}

func udpDatagram(src, dst string, sport, dport uint16) frame {
	return frame{src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst), sport: sport, dport: dport, udp: true,
		payload: []byte("hbf")}
}

func (f frame) with(mod func(*frame)) frame {
	mod(&f)
	return f
}

func (f frame) tcp() []byte {
	opts := append([]byte(nil), f.tcpOptions...)
	for len(opts)%4 != 0 {
		opts = append(opts, 0) // end of options list
	}
	b := make([]byte, 20, 20+len(opts)+len(f.payload))
	binary.BigEndian.PutUint16(b[0:], f.sport)
	binary.BigEndian.PutUint16(b[2:], f.dport)
	binary.BigEndian.PutUint32(b[4:], f.seq)
	b[12] = byte(5+len(opts)/4) << 4
	b[13] = f.flags
	binary.BigEndian.PutUint16(b[14:], 64240)
	return append(append(b, opts...), f.payload...)
}

// bytes is the frame padded to the Ethernet minimum, as a NIC delivers it.
func (f frame) bytes() []byte {
	b := f.raw()
	for len(b) < 60 {
		b = append(b, 0) // padding is not a header
	}
	return b
}

// raw is the frame without padding: its length is where the headers end.
func (f frame) raw() []byte {
	var l4 []byte
	proto := f.proto
	switch {
	case f.udp:
		proto = 17
		l4 = make([]byte, 8, 8+len(f.payload))
		binary.BigEndian.PutUint16(l4[0:], f.sport)
		binary.BigEndian.PutUint16(l4[2:], f.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(f.payload)))
		l4 = append(l4, f.payload...)
	case proto == 0:
		proto = 6
		l4 = f.tcp()
	default:
		l4 = f.payload
	}

	b := make([]byte, 12, 64)
	b[0], b[6] = 0x02, 0x02 // locally administered MACs
	tags := len(f.vlans)
	for i, vid := range f.vlans {
		tpid := uint16(0x88a8)
		if i == tags-1 {
			tpid = 0x8100
		}
		if f.tpids != nil {
			tpid = f.tpids[i]
		}
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, vid)
	}
	if f.src.Is4() {
		frag := f.fragOffset
		if f.moreFrags {
			frag |= 0x2000
		}
		b = binary.BigEndian.AppendUint16(b, 0x0800)
		opts := append([]byte(nil), f.ipOptions...)
		for len(opts)%4 != 0 {
			opts = append(opts, 0) // end of options list
		}
		hlen := 20 + len(opts)
		ip := make([]byte, 20, hlen)
		ip[0] = 0x40 | byte(hlen/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hlen+len(l4)))
		binary.BigEndian.PutUint16(ip[6:], frag)
		ip[8] = 64
		ip[9] = proto
		copy(ip[12:], f.src.AsSlice())
		copy(ip[16:], f.dst.AsSlice())
		ip = append(ip, opts...)
		binary.BigEndian.PutUint16(ip[10:], checksum(ip))
		b = append(b, ip...)
	} else {
		b = binary.BigEndian.AppendUint16(b, 0x86dd)
		var ext []byte
		next := proto
		for i := len(f.ext) - 1; i >= 0; i-- {
			ext = append(f.ext[i].bytes(next), ext...)
			next = f.ext[i].typ
		}
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ext)+len(l4)))
		ip[6] = next
		ip[7] = 64
		copy(ip[8:], f.src.AsSlice())
		copy(ip[24:], f.dst.AsSlice())
		b = append(append(b, ip...), ext...)
	}
	return append(b, l4...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
