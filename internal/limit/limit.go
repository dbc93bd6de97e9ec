// Package limit is hbf's connection limits: at most COUNT connections from
// one source to one local port in any WINDOW, as an operator writes them
// (--limit 22/tcp=6/30s) and the kernel keeps them.
package limit

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/ports"
)

// Action is what a source over a limit gets.
type Action uint8

const (
	// Block blocks the source for --block-duration, as a scan would but
	// without escalation.
	Block Action = iota
	// Escalate blocks it, longer at each offence, as scans are.
	Escalate
	// Drop only throttles it: its connections to the port are dropped
	// until its oldest leaves the window; nothing is blocked.
	Drop
)

func (a Action) String() string {
	switch a {
	case Escalate:
		return "escalate"
	case Drop:
		return "drop"
	}
	return "block"
}

// The bounds of a limit. The kernel keeps the times of a source's last
// MaxCount connections to a port, in slots fixed when its maps load.
const (
	MaxCount  = 64
	MinWindow = time.Second
	MaxWindow = 24 * time.Hour
)

// Limit is one port's limit.
type Limit struct {
	Port   ports.Port
	Count  int           // connections allowed in any Window; the next is over
	Window time.Duration // whole seconds
	Action Action
}

// Form is how a limit is written, for errors that say what was expected.
const Form = "PORT/PROTO=COUNT/WINDOW[:drop|:escalate], as 22/tcp=6/30s"

// String writes l as Parse reads it.
func (l Limit) String() string {
	s := fmt.Sprintf("%d/%s=%d/%s", l.Port.Num, l.Port.Proto, l.Count, WindowString(l.Window))
	if l.Action != Block && !(l.Port.Proto == ports.UDP && l.Action == Drop) {
		s += ":" + l.Action.String()
	}
	return s
}

// WindowString writes a window as its shortest whole unit: 30s, 5m, 2h.
func WindowString(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return strconv.Itoa(int(d/time.Second)) + "s"
}

// Parse reads one limit. A UDP limit only throttles: a datagram's source
// can be forged, and a limit that blocked would let anyone get a victim
// blocked with COUNT+1 datagrams.
func Parse(s string) (Limit, error) {
	bad := func(format string, args ...any) (Limit, error) {
		return Limit{}, fmt.Errorf("%q: %s; write %s", s, fmt.Sprintf(format, args...), Form)
	}
	rule, action, hasAction := strings.Cut(strings.TrimSpace(s), ":")
	port, rate, ok := strings.Cut(rule, "=")
	if !ok {
		return bad("no \"=\" between the port and the rate")
	}
	num, proto, ok := strings.Cut(port, "/")
	if !ok {
		return bad("the port %q names no protocol", port)
	}
	var l Limit
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil || n == 0 {
		return bad("%q is not a port (1-65535)", num)
	}
	l.Port.Num = uint16(n)
	if l.Port.Proto, err = ports.ParseProto(proto); err != nil {
		return bad("%v", err)
	}
	count, win, ok := strings.Cut(rate, "/")
	if !ok {
		return bad("the rate %q is not COUNT/WINDOW", rate)
	}
	if l.Count, err = strconv.Atoi(count); err != nil || l.Count < 1 || l.Count > MaxCount {
		return bad("the count %q is not 1 to %d (the kernel keeps the times of %d connections a source and port)", count, MaxCount, MaxCount)
	}
	if l.Window, err = time.ParseDuration(win); err != nil {
		return bad("the window %q is not a duration such as 30s or 5m", win)
	}
	if l.Window < MinWindow || l.Window > MaxWindow || l.Window%time.Second != 0 {
		return bad("the window %s must be whole seconds, from 1s to 24h", l.Window)
	}
	if l.Port.Proto == ports.UDP {
		l.Action = Drop
	}
	if hasAction {
		switch action {
		case "drop":
			l.Action = Drop
		case "escalate":
			l.Action = Escalate
		default:
			return bad("%q is not an action: drop or escalate", action)
		}
		if l.Port.Proto == ports.UDP && l.Action != Drop {
			return bad("a UDP limit only throttles (:drop): a datagram's source can be forged")
		}
	}
	return l, nil
}

// ParseList reads limits, one a port: two limits of one port would leave
// which of them holds to chance.
func ParseList(items []string) ([]Limit, error) {
	var out []Limit
	for _, s := range items {
		l, err := Parse(s)
		if err != nil {
			return nil, err
		}
		if i := slices.IndexFunc(out, func(o Limit) bool { return o.Port == l.Port }); i >= 0 {
			return nil, fmt.Errorf("%q: %d/%s has a limit already (%s); give each port one", s, l.Port.Num, l.Port.Proto, out[i])
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Limit) int { return a.Port.Compare(b.Port) })
	return out, nil
}
