package fleet

import (
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/hbf-firewall/hbf/internal/policy"
)

// Why a block of another node is not applied here, besides the reasons a
// value is refused when read.
const (
	RejectProtected   = "protected"    // this host never blocks it: its own, its allowlist, a member, etcd
	RejectTooWide     = "too_wide"     // wider than this host's --min-prefix-*
	RejectRateLimited = "rate_limited" // past --fleet-accept-per-minute of its origin, for now
	RejectQuota       = "quota"        // its origin holds its quota of entries here
)

// RejectReasons are every reason an entry is not applied, for metrics
// that show each from the start.
var RejectReasons = []string{RejectNotJSON, RejectVersion, RejectPrefix, RejectMismatch, RejectOutside, RejectExpired,
	RejectProtected, RejectTooWide, RejectRateLimited, RejectQuota}

// Ops are the operations with etcd whose failures a node counts.
var Ops = []string{"member", "read", "watch", "publish"}

// Limits bound what one origin can make this host apply: scan sources can
// be forged, and sharing turns a forged scan into a fleet-wide block.
type Limits struct {
	// MinReporters applies a scan block only once this many nodes report
	// the source; a manual block needs one.
	MinReporters int
	// PerMinute bounds the entries of one origin applied a minute; 0: no
	// bound.
	PerMinute int
	// Quota bounds the entries of one origin in force here; 0: no bound.
	Quota int
}

// Applied is a block of another node this host applies.
type Applied struct {
	Origin string // the publishing node
	Block  Block
}

// Receiver decides which of the fleet's blocks this host applies. It
// remembers what it applied, so that an origin's budget is spent by new
// entries only, and what it refused, so that each refusal counts once.
type Receiver struct {
	self   string
	limits Limits

	applied map[string]map[netip.Prefix]time.Time // by origin: when first applied
	spent   map[string][]time.Time                // by origin: applications in the last minute
	refused map[string]map[netip.Prefix]string    // by origin: the reason last counted
}

// NewReceiver returns a receiver for the node self.
func NewReceiver(self string, limits Limits) *Receiver {
	return &Receiver{self: self, limits: limits, applied: map[string]map[netip.Prefix]time.Time{},
		spent: map[string][]time.Time{}, refused: map[string]map[netip.Prefix]string{}}
}

// Known tells the receiver that origin's block of p was applied here since
// first, before it started: it is not new, and spends no budget.
func (r *Receiver) Known(origin string, p netip.Prefix, first time.Time) {
	if r.applied[origin] == nil {
		r.applied[origin] = map[netip.Prefix]time.Time{}
	}
	r.applied[origin][p] = first
}

// Decision is what a receiver decided for one view.
type Decision struct {
	Apply []Applied
	// New are the entries of Apply this host did not apply before.
	New []Applied
	// Refused counts the refusals not counted before, by reason.
	Refused map[string]int
	// Pending are scan blocks waiting for more reporters.
	Pending int
}

// Decide says which blocks of v this host applies at now; check is its
// policy for a block of a prefix (policy.TooWideError when too wide).
func (r *Receiver) Decide(v View, check func(netip.Prefix) error, now time.Time) Decision {
	d := Decision{Refused: map[string]int{}}
	reporters := map[netip.Prefix]int{}
	for _, blocks := range v.Blocks {
		for p, b := range blocks {
			if b.Origin == "scan" && !b.Expired(now) {
				reporters[p]++
			}
		}
	}
	applied := map[string]map[netip.Prefix]time.Time{}
	for origin, blocks := range v.Blocks {
		if origin == r.self {
			continue
		}
		var fresh []Block
		for p, b := range blocks {
			switch u, unblocked := v.Unblocks[p]; {
			case b.Expired(now), unblocked && u.Ends(b):
				continue
			case b.Origin == "scan" && reporters[p] < max(r.limits.MinReporters, 1):
				d.Pending++
				continue
			}
			if err := check(p); err != nil {
				reason := RejectProtected
				if _, wide := errors.AsType[*policy.TooWideError](err); wide {
					reason = RejectTooWide
				}
				r.count(&d, origin, p, reason)
				continue
			}
			first, known := r.applied[origin][p]
			if !known {
				fresh = append(fresh, b)
				continue
			}
			r.keep(&d, applied, origin, b, first)
		}
		// New entries in the order they were made, while the origin's
		// quota and budget last.
		slices.SortFunc(fresh, func(a, b Block) int {
			return cmp.Or(a.Created.Compare(b.Created), a.Prefix.Addr().Compare(b.Prefix.Addr()))
		})
		for _, b := range fresh {
			if reason := r.budget(origin, len(applied[origin]), now); reason != "" {
				r.count(&d, origin, b.Prefix, reason)
				continue
			}
			d.New = append(d.New, Applied{Origin: origin, Block: b})
			r.keep(&d, applied, origin, b, now)
		}
	}
	r.applied = applied
	return d
}

// keep applies b of origin, first applied at first.
func (r *Receiver) keep(d *Decision, applied map[string]map[netip.Prefix]time.Time, origin string, b Block, first time.Time) {
	if applied[origin] == nil {
		applied[origin] = map[netip.Prefix]time.Time{}
	}
	applied[origin][b.Prefix] = first
	delete(r.refused[origin], b.Prefix)
	d.Apply = append(d.Apply, Applied{Origin: origin, Block: b})
}

// budget says why an origin that holds held entries here cannot have one
// more now, or "" when it can, and spends it.
func (r *Receiver) budget(origin string, held int, now time.Time) string {
	if r.limits.Quota > 0 && held >= r.limits.Quota {
		return RejectQuota
	}
	if r.limits.PerMinute > 0 {
		recent := slices.DeleteFunc(r.spent[origin], func(at time.Time) bool { return now.Sub(at) >= time.Minute })
		if len(recent) >= r.limits.PerMinute {
			r.spent[origin] = recent
			return RejectRateLimited
		}
		r.spent[origin] = append(recent, now)
	}
	return ""
}

// count counts a refusal once per origin, prefix and reason.
func (r *Receiver) count(d *Decision, origin string, p netip.Prefix, reason string) {
	if r.refused[origin] == nil {
		r.refused[origin] = map[netip.Prefix]string{}
	}
	if r.refused[origin][p] == reason {
		return
	}
	r.refused[origin][p] = reason
	d.Refused[reason]++
}
