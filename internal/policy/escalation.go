package policy

import (
	"fmt"
	"strings"
	"time"
)

// Escalation lengthens the block of a source blocked again for a scan
// (Zeek's catch-and-release, fail2ban's bantime.increment): the first
// offence gets the block duration, the next ones After in turn, the last
// step repeating. A duration of 0 blocks for good. A source that scans no
// more for Forget starts again at the first offence.
type Escalation struct {
	After  []time.Duration
	Forget time.Duration
}

// DefaultEscalation: 1 h (the block duration), then 24 h, 7 d, then for good;
// forgotten after 30 quiet days.
var DefaultEscalation = Escalation{After: []time.Duration{24 * time.Hour, 7 * 24 * time.Hour, 0}, Forget: 30 * 24 * time.Hour}

// Duration is the block for an offence (1 is the first).
func (e Escalation) Duration(offence int, first time.Duration) time.Duration {
	if offence <= 1 || len(e.After) == 0 {
		return first
	}
	return e.After[min(offence-2, len(e.After)-1)]
}

// ParseSchedule reads the durations after the first offence, "24h,168h,0",
// or "none" for no escalation.
func ParseSchedule(s string) ([]time.Duration, error) {
	if s == "none" || s == "" {
		return nil, nil
	}
	var out []time.Duration
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "0" {
			out = append(out, 0)
			continue
		}
		d, err := time.ParseDuration(part)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("%q is not a duration (24h, 168h; 0 blocks for good)", part)
		}
		out = append(out, d)
	}
	return out, nil
}

// String writes the schedule as ParseSchedule reads it.
func (e Escalation) String() string {
	if len(e.After) == 0 {
		return "none"
	}
	s := make([]string, len(e.After))
	for i, d := range e.After {
		s[i] = d.String()
		if d == 0 {
			s[i] = "0"
		}
	}
	return strings.Join(s, ",")
}
