package top

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Row is a source being dropped, as the view lists it.
type Row struct {
	Source string       `json:"source"`          // the prefix, or the sources over a limit
	Prefix netip.Prefix `json:"prefix,omitzero"` // invalid for a limit's sources
	Origin string       `json:"origin"`          // its decisions' origins, comma-separated
	Reason string       `json:"reason,omitempty"`
	// Dropped in the last interval, and in total.
	Interval uint64    `json:"dropped_interval"`
	Total    uint64    `json:"dropped_total"`
	Expires  time.Time `json:"expires,omitzero"` // absent: never
}

// rowsOf lists what b drops: its busiest sources, and the sources a
// limit's :drop throttles, which have no block of their own (the limit
// keeps their count). a, the sample before, gives the interval's drops.
func rowsOf(a *sample, b sample) []Row {
	before := map[netip.Prefix]uint64{}
	limits := map[string]uint64{}
	if a != nil {
		for _, s := range a.top.Sources {
			before[s.Prefix] = s.Packets
		}
		for _, l := range a.status.Limits {
			limits[l.Limit] = l.Dropped
		}
	}
	span := time.Duration(0)
	if a != nil {
		span = b.at.Sub(a.at)
	}
	rows := make([]Row, 0, len(b.top.Sources)+len(b.status.Limits))
	for _, s := range b.top.Sources {
		r := Row{Source: s.Prefix.String(), Prefix: s.Prefix, Origin: strings.Join(s.Origins, ","), Reason: s.Reason,
			Total: s.Packets, Expires: s.Expires}
		if p, ok := before[s.Prefix]; ok && p <= s.Packets {
			r.Interval = s.Packets - p
		} else {
			// First seen: the daemon's own rate says how busy it is.
			r.Interval = uint64(s.Rate * span.Seconds())
		}
		rows = append(rows, r)
	}
	for _, l := range b.status.Limits {
		if l.Action != "drop" && l.Proto != "udp" || l.Dropped == 0 {
			continue
		}
		r := Row{Source: fmt.Sprintf("over %d/%s", l.Port, l.Proto), Origin: "limit", Reason: "connection limit " + l.Limit,
			Total: l.Dropped}
		if p, ok := limits[l.Limit]; ok && p <= l.Dropped {
			r.Interval = l.Dropped - p
		}
		rows = append(rows, r)
	}
	return rows
}

// Sort is a column the rows are sorted by.
type Sort int

const (
	ByInterval Sort = iota // busiest in the interval first
	ByTotal                // most dropped in total first
	BySource               // by address
	ByLeft                 // ending soonest first
	ByOrigin
	sorts
)

func (s Sort) String() string {
	return [...]string{"drops", "total", "source", "left", "origin"}[s]
}

func sortRows(rows []Row, by Sort) {
	slices.SortStableFunc(rows, func(a, b Row) int {
		var c int
		switch by {
		case ByInterval:
			c = cmp.Compare(b.Interval, a.Interval)
		case ByTotal:
			c = cmp.Compare(b.Total, a.Total)
		case BySource:
			c = comparePrefix(a.Prefix, b.Prefix)
		case ByLeft:
			c = compareExpiry(a.Expires, b.Expires)
		case ByOrigin:
			c = strings.Compare(a.Origin, b.Origin)
		}
		return cmp.Or(c, cmp.Compare(b.Interval, a.Interval), cmp.Compare(b.Total, a.Total), strings.Compare(a.Source, b.Source))
	})
}

// comparePrefix orders addresses, a limit's sources (no prefix) last.
func comparePrefix(a, b netip.Prefix) int {
	switch {
	case a.IsValid() != b.IsValid():
		if a.IsValid() {
			return -1
		}
		return 1
	case !a.IsValid():
		return 0
	}
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// compareExpiry orders the soonest end first, never last.
func compareExpiry(a, b time.Time) int {
	switch {
	case a.IsZero() && b.IsZero():
		return 0
	case a.IsZero():
		return 1
	case b.IsZero():
		return -1
	}
	return a.Compare(b)
}

// Filter keeps the rows of an origin and an address prefix.
type Filter struct {
	Origin  string // "": every origin; "fleet" also keeps fleet:<node>
	Address string // "": every address; a CIDR, or the start of an address
}

func (f Filter) keeps(r Row) bool {
	if f.Origin != "" && !hasOrigin(r.Origin, f.Origin) {
		return false
	}
	if f.Address == "" {
		return true
	}
	if p, err := netip.ParsePrefix(f.Address); err == nil {
		return r.Prefix.IsValid() && p.Overlaps(r.Prefix)
	}
	return strings.HasPrefix(r.Source, f.Address)
}

// hasOrigin reports whether origins, comma-separated, holds kind: the
// origin itself or its family (fleet for fleet:<node>).
func hasOrigin(origins, kind string) bool {
	for o := range strings.SplitSeq(origins, ",") {
		if o == kind || strings.HasPrefix(o, kind+":") {
			return true
		}
	}
	return false
}

// originKinds are the families the origin filter cycles through.
var originKinds = []string{"", "scan", "limit", "manual", "file", "fleet", "crowdsec", "fail2ban"}

func filterRows(rows []Row, f Filter) []Row {
	return slices.DeleteFunc(rows, func(r Row) bool { return !f.keeps(r) })
}
