// Package crowdsec speaks to a CrowdSec Local API (LAPI): it reads the
// decisions a bouncer enforces from /v1/decisions/stream, and pushes the
// blocks hbf makes to /v1/alerts as a registered machine.
//
// It is a client of those documented endpoints over net/http, not the
// official go-cs-bouncer library, which brings much of CrowdSec's module
// (go-openapi, gopsutil …) into hbf's one binary for two requests.
package crowdsec

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/policy"
)

// Decision is one entry of LAPI's decision stream.
type Decision struct {
	ID       int64  `json:"id"`
	Origin   string `json:"origin"`   // crowdsec, cscli, cscli-import, CAPI, lists …
	Type     string `json:"type"`     // ban, captcha, or a custom type
	Scope    string `json:"scope"`    // Ip or Range (CAPI writes ip)
	Value    string `json:"value"`    // 192.0.2.7, 192.0.2.7/32, 2001:db8::/64
	Duration string `json:"duration"` // time left: "59m59.02s"; negative once deleted
	Scenario string `json:"scenario"`
}

// Skip says why a decision is not enforced, as hbf_crowdsec_skipped's
// reason: what hbf does not do (type, scope) or cannot read (value,
// duration).
type Skip string

const (
	SkipType     Skip = "type"     // not a ban: captcha, throttle, custom
	SkipScope    Skip = "scope"    // not Ip nor Range: Country, AS, Username …
	SkipValue    Skip = "value"    // not an address or a prefix
	SkipDuration Skip = "duration" // not a duration, or not positive
	SkipOwn      Skip = "own"      // of an alert hbf pushed: its block is hbf's already
)

// Skips are every reason, in the order metrics list them.
var Skips = []Skip{SkipType, SkipScope, SkipValue, SkipDuration, SkipOwn}

// SkipError is a decision hbf does not enforce, and why.
type SkipError struct {
	Reason Skip
	Err    error
}

func (e *SkipError) Error() string { return e.Err.Error() }

func skip(reason Skip, format string, args ...any) error {
	return &SkipError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Prefix is what a ban decision blocks: its value as a prefix. A decision
// of another type or scope, or whose value does not parse, is a
// *SkipError.
func (d Decision) Prefix() (netip.Prefix, error) {
	if !strings.EqualFold(d.Type, "ban") {
		return netip.Prefix{}, skip(SkipType, "decision %d: type %q is not a ban", d.ID, d.Type)
	}
	scope := strings.ToLower(d.Scope)
	if scope != "ip" && scope != "range" {
		return netip.Prefix{}, skip(SkipScope, "decision %d: scope %q is neither Ip nor Range", d.ID, d.Scope)
	}
	p, err := policy.ParsePrefix(strings.TrimSpace(d.Value))
	if err != nil {
		return netip.Prefix{}, skip(SkipValue, "decision %d: %v", d.ID, err)
	}
	if scope == "ip" && !p.IsSingleIP() {
		return netip.Prefix{}, skip(SkipValue, "decision %d: scope Ip with the range %s", d.ID, p)
	}
	return p, nil
}

// Expires is when a decision that has duration left at now ends. A
// duration that does not parse, or is not positive, is a *SkipError: a
// decision still in force has time left.
func (d Decision) Expires(now time.Time) (time.Time, error) {
	left, err := time.ParseDuration(d.Duration)
	if err != nil {
		return time.Time{}, skip(SkipDuration, "decision %d: duration %q: %v", d.ID, d.Duration, err)
	}
	if left <= 0 {
		return time.Time{}, skip(SkipDuration, "decision %d: duration %q is not positive", d.ID, d.Duration)
	}
	return now.Add(left), nil
}

// HBFOrigin is the origin of the blocks a decision of origin makes in hbf:
// crowdsec:<origin>.
func HBFOrigin(origin string) string { return "crowdsec:" + origin }
