package decision

import (
	"net/netip"
	"time"

	"github.com/hbf-firewall/hbf/internal/crowdsec"
	"github.com/hbf-firewall/hbf/internal/store"
)

// CrowdSec's side of the decisions: the blocks of the decisions a CrowdSec
// Local API holds (origin crowdsec:<origin>), one record per prefix and
// decision origin, ending when the longest decision of the pair does.

// ApplyCrowdSec brings CrowdSec's blocks here in step: the records of put
// (origins crowdsec:<origin>) are applied, again when their values
// changed, and those of remove end. whole: put holds every decision in
// force (a snapshot), and every other CrowdSec record ends too, so that
// nothing drifts. What put holds has passed the host's policy.
func (e *Engine) ApplyCrowdSec(put []store.Block, remove []crowdsec.Ref, whole bool) (Applied, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	after := newPending(e.crowdsecRecords)
	if whole {
		for p, recs := range e.blocks {
			for o := range recs {
				if o.CrowdSec() != "" {
					delete(after.of(p), o)
				}
			}
		}
	}
	for _, r := range remove {
		delete(after.of(r.Prefix), store.OriginCrowdSec(r.Origin))
	}
	for _, b := range put {
		// A decision's expiry is read from the time it has left, a little
		// later at each read: within a second, the record stays as it is,
		// so that a snapshot of the same decisions rewrites nothing.
		if old, ok := e.blocks[b.Prefix][b.Origin]; ok && old.Reason == b.Reason && closeTimes(old.Expires, b.Expires) {
			b = old
		}
		after.of(b.Prefix)[b.Origin] = b
	}
	return e.replaceRecords(after, "crowdsec")
}

// closeTimes reports whether a and b are within a second of each other.
func closeTimes(a, b time.Time) bool {
	d := a.Sub(b)
	return d > -time.Second && d < time.Second
}

// crowdsecRecords are p's records of CrowdSec origins; nil when there are
// none.
func (e *Engine) crowdsecRecords(p netip.Prefix) map[store.Origin]store.Block {
	return e.recordsOf(p, func(o store.Origin) bool { return o.CrowdSec() != "" })
}
