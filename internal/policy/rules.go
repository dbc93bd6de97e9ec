package policy

import (
	"fmt"
	"net/netip"
)

// Rules say what an operator may block.
type Rules struct {
	// Blocks shorter than these are refused: too easy to cut off half the
	// internet by a typo.
	MinBitsV4, MinBitsV6 int
}

// DefaultRules refuse blocks wider than a /8 (IPv4) or a /32 (IPv6).
var DefaultRules = Rules{MinBitsV4: 8, MinBitsV6: 32}

// MinBits is the narrowest block the rules allow for p's family.
func (r Rules) MinBits(p netip.Prefix) int {
	if p.Addr().Is4() {
		return r.MinBitsV4
	}
	return r.MinBitsV6
}

// TooWideError refuses a block wider than the rules allow for its family,
// or (MinBits 0) a block of everything.
type TooWideError struct {
	Prefix  netip.Prefix
	MinBits int
}

func (e *TooWideError) Error() string {
	if e.MinBits == 0 {
		return fmt.Sprintf("%s would block every %s source", e.Prefix, family(e.Prefix))
	}
	return fmt.Sprintf("%s is wider than /%d, the narrowest %s block allowed", e.Prefix, e.MinBits, family(e.Prefix))
}

// CheckBlock refuses a block of p when it is everything, or wider than the
// minimum. The error names the rule. What is protected is another check:
// internal/protect's.
func (r Rules) CheckBlock(p netip.Prefix) error {
	if err := CheckBlock(p); err != nil {
		return err
	}
	if min := r.MinBits(p); p.Bits() < min {
		return &TooWideError{Prefix: p, MinBits: min}
	}
	return nil
}

// CheckAllow refuses allows no careful operator means.
func CheckAllow(p netip.Prefix) error {
	if p.Bits() == 0 {
		return fmt.Errorf("%s would exempt every %s source from hbf: stop hbf instead", p, family(p))
	}
	return checkSource(p)
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}
