// Package sources reads the lists that blocks come from besides detection.
package sources

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"iter"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/hbf-firewall/hbf/internal/policy"
)

// entry is a prefix in 17 bytes: a million-line list stays small in memory.
// IPv4 is kept IPv4-mapped, its length counted in 128 bits.
type entry struct {
	addr [16]byte
	bits uint8
}

func entryOf(p netip.Prefix) entry {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return entry{addr: p.Addr().As16(), bits: uint8(bits)}
}

func (e entry) prefix() netip.Prefix {
	a := netip.AddrFrom16(e.addr)
	if a.Is4In6() && e.bits >= 96 {
		return netip.PrefixFrom(a.Unmap(), int(e.bits)-96)
	}
	return netip.PrefixFrom(a, int(e.bits))
}

func compareEntries(a, b entry) int {
	if c := bytes.Compare(a.addr[:], b.addr[:]); c != 0 {
		return c
	}
	return cmp.Compare(a.bits, b.bits)
}

// List is a parsed list: distinct prefixes, sorted.
type List struct {
	entries []entry
}

// Len is the number of distinct prefixes.
func (l *List) Len() int { return len(l.entries) }

// All yields the prefixes.
func (l *List) All() iter.Seq[netip.Prefix] {
	return func(yield func(netip.Prefix) bool) {
		for _, e := range l.entries {
			if !yield(e.prefix()) {
				return
			}
		}
	}
}

// Has reports whether p itself is on the list.
func (l *List) Has(p netip.Prefix) bool {
	_, found := slices.BinarySearchFunc(l.entries, entryOf(p), compareEntries)
	return found
}

// Holding returns the prefixes of the list that contain a.
func (l *List) Holding(a netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, e := range l.entries {
		if p := e.prefix(); p.Contains(a) {
			out = append(out, p)
		}
	}
	return out
}

// Skipped is an entry the list holds but policy refused.
type Skipped struct {
	Line   int
	Prefix netip.Prefix
	Err    error
}

// ParseList reads a list of IPs and CIDRs: one per line, blank lines and
// comments (from # to the end of the line) allowed. A line that is not an
// IP or CIDR refuses the whole list, so a list is applied whole or not at
// all; an entry check refuses (own address, allowlisted, too wide) is
// skipped alone and returned.
func ParseList(r io.Reader, check func(netip.Prefix) error) (*List, []Skipped, error) {
	var l List
	var skipped []Skipped
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		p, err := policy.ParsePrefix(string(line))
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", n, err)
		}
		if check != nil {
			if err := check(p); err != nil {
				skipped = append(skipped, Skipped{Line: n, Prefix: p, Err: err})
				continue
			}
		}
		l.entries = append(l.entries, entryOf(p))
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	slices.SortFunc(l.entries, compareEntries)
	l.entries = slices.CompactFunc(l.entries, func(a, b entry) bool { return a == b })
	l.entries = slices.Clip(l.entries)
	return &l, skipped, nil
}

// File is a list file as read: its content, for keeping a last good copy,
// and what it parsed to.
type File struct {
	Path    string
	Content []byte
	List    *List
	Skipped []Skipped
}

// ReadFile reads and parses a list file; errors name the file.
func ReadFile(path string, check func(netip.Prefix) error) (*File, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	list, skipped, err := ParseList(bytes.NewReader(content), check)
	if err != nil {
		return nil, fmt.Errorf("%s %w", path, err)
	}
	return &File{Path: path, Content: content, List: list, Skipped: skipped}, nil
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
