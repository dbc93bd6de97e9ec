// Package sources reads the lists that blocks come from besides detection.
package sources

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"iter"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/hbf-firewall/hbf/internal/policy"
)

// A list keeps IPv4 prefixes packed in 8 bytes (address << 8 | length), so
// a million-line list takes 8 MB and sorts as integers; IPv6 prefixes, rarer
// in big lists, take 17 bytes.
type entry6 struct {
	addr [16]byte
	bits uint8
}

func pack4(p netip.Prefix) uint64 {
	a := p.Addr().As4()
	return uint64(binary.BigEndian.Uint32(a[:]))<<8 | uint64(p.Bits())
}

func unpack4(v uint64) netip.Prefix {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], uint32(v>>8))
	return netip.PrefixFrom(netip.AddrFrom4(a), int(v&0xff))
}

func entry6Of(p netip.Prefix) entry6 { return entry6{addr: p.Addr().As16(), bits: uint8(p.Bits())} }

func (e entry6) prefix() netip.Prefix { return netip.PrefixFrom(netip.AddrFrom16(e.addr), int(e.bits)) }

func compare6(a, b entry6) int {
	if c := bytes.Compare(a.addr[:], b.addr[:]); c != 0 {
		return c
	}
	return cmp.Compare(a.bits, b.bits)
}

// List is a parsed list: distinct prefixes, sorted, IPv4 first.
type List struct {
	v4 []uint64
	v6 []entry6
}

// Len is the number of distinct prefixes.
func (l *List) Len() int { return len(l.v4) + len(l.v6) }

// Exact is how many of the list's entries are single addresses (/32,
// /128), of each family: they go to the exact-address block maps, one a
// family, the others to the prefix map.
func (l *List) Exact() (v4, v6 int) {
	for _, v := range l.v4 {
		if v&0xff == 32 {
			v4++
		}
	}
	for _, e := range l.v6 {
		if e.bits == 128 {
			v6++
		}
	}
	return v4, v6
}

// All yields the prefixes.
func (l *List) All() iter.Seq[netip.Prefix] {
	return func(yield func(netip.Prefix) bool) {
		for _, v := range l.v4 {
			if !yield(unpack4(v)) {
				return
			}
		}
		for _, e := range l.v6 {
			if !yield(e.prefix()) {
				return
			}
		}
	}
}

// Has reports whether p itself is on the list.
func (l *List) Has(p netip.Prefix) bool {
	if p.Addr().Is4() {
		_, found := slices.BinarySearch(l.v4, pack4(p))
		return found
	}
	_, found := slices.BinarySearchFunc(l.v6, entry6Of(p), compare6)
	return found
}

// Holding returns the prefixes of the list that contain a.
func (l *List) Holding(a netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for p := range l.All() {
		if p.Contains(a) {
			out = append(out, p)
		}
	}
	return out
}

func (l *List) add(p netip.Prefix) {
	if p.Addr().Is4() {
		l.v4 = append(l.v4, pack4(p))
	} else {
		l.v6 = append(l.v6, entry6Of(p))
	}
}

func (l *List) finish() {
	slices.Sort(l.v4)
	l.v4 = slices.Clip(slices.Compact(l.v4))
	slices.SortFunc(l.v6, compare6)
	l.v6 = slices.Clip(slices.CompactFunc(l.v6, func(a, b entry6) bool { return a == b }))
}

// Skipped is an entry the list holds but policy refused.
type Skipped struct {
	Line   int
	Prefix netip.Prefix
	Err    error
}

// ParseList reads a list of IPs and CIDRs: one per line, blank lines and
// comments (from # or ; to the end of the line) allowed. A line that is not an
// IP or CIDR refuses the whole list, so a list is applied whole or not at
// all; an entry check refuses (own address, allowlisted, too wide) is
// skipped alone and returned. sizeHint, the number of lines if known, saves
// regrowing the list.
func ParseList(r io.Reader, check func(netip.Prefix) error) (*List, []Skipped, error) {
	return parseList(r, check, 0)
}

func parseList(r io.Reader, check func(netip.Prefix) error, sizeHint int) (*List, []Skipped, error) {
	l := List{v4: make([]uint64, 0, sizeHint)}
	var skipped []Skipped
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		// # and ; start comments (DROP-style lists use ;); neither is ever
		// part of an address.
		if i := bytes.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		p, ok := parseIPv4(line)
		if !ok {
			var err error
			if p, err = policy.ParsePrefix(string(line)); err != nil {
				return nil, nil, fmt.Errorf("line %d: %w", n, err)
			}
		}
		if check != nil {
			if err := check(p); err != nil {
				skipped = append(skipped, Skipped{Line: n, Prefix: p, Err: err})
				continue
			}
		}
		l.add(p)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	l.finish()
	return &l, skipped, nil
}

// parseIPv4 reads a plain dotted quad without allocating: most lines of a
// large list are one. Anything else (leading zeros included, which netip
// refuses too) goes to the full parser.
func parseIPv4(b []byte) (netip.Prefix, bool) {
	var a [4]byte
	octet, val, digits := 0, 0, 0
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9':
			if digits > 0 && val == 0 {
				return netip.Prefix{}, false // leading zero
			}
			val = val*10 + int(c-'0')
			digits++
			if val > 255 {
				return netip.Prefix{}, false
			}
		case c == '.' && digits > 0 && octet < 3 && i < len(b)-1:
			a[octet] = byte(val)
			octet, val, digits = octet+1, 0, 0
		default:
			return netip.Prefix{}, false
		}
	}
	if octet != 3 || digits == 0 {
		return netip.Prefix{}, false
	}
	a[3] = byte(val)
	return netip.PrefixFrom(netip.AddrFrom4(a), 32), true
}

// File is a list file as read: what it parsed to, and the hash of the
// content that did, to keep a copy of exactly that.
type File struct {
	Path    string
	SHA256  [sha256.Size]byte
	List    *List
	Skipped []Skipped
}

// ReadFile reads and parses a list file, streaming: a million-line list is
// never held as text. Errors name the file.
func ReadFile(path string, check func(netip.Prefix) error) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	lines, err := countLines(f)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	h := sha256.New()
	list, skipped, err := parseList(io.TeeReader(f, h), check, lines)
	if err != nil {
		return nil, fmt.Errorf("%s %w", path, err)
	}
	out := &File{Path: path, List: list, Skipped: skipped}
	h.Sum(out.SHA256[:0])
	return out, nil
}

func countLines(r io.Reader) (int, error) {
	buf := make([]byte, 64*1024)
	n := 0
	for {
		k, err := r.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if err == io.EOF {
			return n + 1, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// SkippedText describes the skipped entries of a list, for a warning.
func SkippedText(path string, skipped []Skipped) string {
	var b strings.Builder
	for i, s := range skipped {
		if i == 5 {
			fmt.Fprintf(&b, "; and %d more", len(skipped)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s line %d: %v", path, s.Line, s.Err)
	}
	return b.String()
}
