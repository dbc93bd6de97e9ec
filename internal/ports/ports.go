// Package ports names what hbf counts toward a scan: a port number with its
// protocol, and the lists of them an operator writes (--ignore-ports).
package ports

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Proto is a transport protocol hbf counts ports of.
type Proto uint8

const (
	TCP Proto = iota
	UDP
)

func (p Proto) String() string {
	if p == UDP {
		return "udp"
	}
	return "tcp"
}

// MarshalText writes the protocol's name: JSON fields of it with
// omitempty leave TCP, the zero value, out, as records without it are.
func (p Proto) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (p *Proto) UnmarshalText(b []byte) error {
	v, err := ParseProto(string(b))
	*p = v
	return err
}

// ParseProto reads "tcp" or "udp".
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("%q is not a protocol: tcp or udp", s)
}

// Port is a destination port of one protocol: TCP and UDP port 53 are two.
type Port struct {
	Num   uint16
	Proto Proto
}

// String is the port as hbf prints it: TCP ports bare ("80"), as they
// always were, UDP ones with their protocol ("53/udp").
func (p Port) String() string {
	if p.Proto == UDP {
		return strconv.Itoa(int(p.Num)) + "/udp"
	}
	return strconv.Itoa(int(p.Num))
}

// Compare orders ports TCP first, then by number.
func (p Port) Compare(o Port) int {
	if p.Proto != o.Proto {
		return int(p.Proto) - int(o.Proto)
	}
	return int(p.Num) - int(o.Num)
}

// Parse reads a port as String writes it, or with "/tcp".
func Parse(s string) (Port, error) {
	num, proto, hasProto := strings.Cut(s, "/")
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil || n == 0 {
		return Port{}, fmt.Errorf("%q is not a port: 1-65535, with /tcp or /udp", s)
	}
	p := Port{Num: uint16(n)}
	if hasProto {
		if p.Proto, err = ParseProto(proto); err != nil {
			return Port{}, fmt.Errorf("port %q: %w", s, err)
		}
	}
	return p, nil
}

// Range is a run of ports of one protocol, or of both.
type Range struct {
	Lo, Hi uint16
	TCP    bool
	UDP    bool
}

// String writes the range as ParseList reads it.
func (r Range) String() string {
	s := strconv.Itoa(int(r.Lo))
	if r.Hi != r.Lo {
		s += "-" + strconv.Itoa(int(r.Hi))
	}
	switch {
	case r.TCP && !r.UDP:
		s += "/tcp"
	case r.UDP && !r.TCP:
		s += "/udp"
	}
	return s
}

// Contains reports whether p is in the range.
func (r Range) Contains(p Port) bool {
	in := r.TCP
	if p.Proto == UDP {
		in = r.UDP
	}
	return in && p.Num >= r.Lo && p.Num <= r.Hi
}

// List is a list of ranges, as --ignore-ports takes it.
type List []Range

// ParseList reads "80,443,53/udp,8000-8100/tcp": a port or range without a
// protocol is both TCP's and UDP's.
func ParseList(s string) (List, error) {
	var l List
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		r := Range{TCP: true, UDP: true}
		span, proto, hasProto := strings.Cut(part, "/")
		if hasProto {
			p, err := ParseProto(proto)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", part, err)
			}
			r.TCP, r.UDP = p == TCP, p == UDP
		}
		lo, hi, isRange := strings.Cut(span, "-")
		first, err1 := strconv.ParseUint(lo, 10, 16)
		last, err2 := first, error(nil)
		if isRange {
			last, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 != nil || err2 != nil || first == 0 || last < first {
			return nil, fmt.Errorf("%q is not a port (1-65535) or a range of them (8000-8100), "+
				"with /tcp or /udp for one protocol only", part)
		}
		r.Lo, r.Hi = uint16(first), uint16(last)
		l = append(l, r)
	}
	return l, nil
}

func (l List) String() string {
	s := make([]string, len(l))
	for i, r := range l {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

// Contains reports whether any range of the list holds p.
func (l List) Contains(p Port) bool {
	return slices.ContainsFunc(l, func(r Range) bool { return r.Contains(p) })
}

// Bits is a set of the ports of one protocol: bit p%64 of word p/64, the
// layout the program reads.
type Bits [65536 / 64]uint64

// Set adds port n.
func (b *Bits) Set(n uint16) { b[n>>6] |= 1 << (n & 63) }

// Has reports whether port n is in the set.
func (b *Bits) Has(n uint16) bool { return b[n>>6]>>(n&63)&1 == 1 }

// Bits is the set of the list's ports of proto.
func (l List) Bits(proto Proto) *Bits {
	var b Bits
	for _, r := range l {
		if !r.Contains(Port{Num: r.Lo, Proto: proto}) {
			continue
		}
		for n := uint32(r.Lo); n <= uint32(r.Hi); n++ {
			b.Set(uint16(n))
		}
	}
	return &b
}

// Join writes ports as String does, comma-separated.
func Join(ps []Port) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Compact writes sorted ports (Port.Compare) as Join does, runs of
// consecutive ports of one protocol as ranges: "8080-8082,53/udp".
func Compact(ps []Port) string {
	var parts []string
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1].Proto == ps[i].Proto && ps[j+1].Num == ps[j].Num+1 {
			j++
		}
		r := Range{Lo: ps[i].Num, Hi: ps[j].Num, TCP: ps[i].Proto == TCP, UDP: ps[i].Proto == UDP}
		s := r.String()
		if r.TCP {
			s = strings.TrimSuffix(s, "/tcp") // TCP ports stay bare, as in Join
		}
		parts = append(parts, s)
		i = j + 1
	}
	return strings.Join(parts, ",")
}
