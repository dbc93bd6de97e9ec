package daemon

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ConnLog says which connection lines are written: all, none, or at most
// Rate a second. The counters stay exact whatever it says.
type ConnLog struct {
	Off  bool
	Rate int // lines a second; 0: all
}

func (c ConnLog) String() string {
	switch {
	case c.Off:
		return "off"
	case c.Rate > 0:
		return fmt.Sprintf("rate=%d/s", c.Rate)
	}
	return "all"
}

// ParseConnLog reads all, off or rate=N/s.
func ParseConnLog(s string) (ConnLog, error) {
	switch s {
	case "all":
		return ConnLog{}, nil
	case "off":
		return ConnLog{Off: true}, nil
	}
	if n, ok := strings.CutPrefix(s, "rate="); ok {
		n = strings.TrimSuffix(n, "/s")
		if v, err := strconv.Atoi(n); err == nil && v > 0 {
			return ConnLog{Rate: v}, nil
		}
	}
	return ConnLog{}, fmt.Errorf("%q: use all, off, or rate=N/s with N > 0", s)
}

// connLimiter lets through at most rate connection lines a second and
// counts the others, so that a flood cannot fill the disk.
type connLimiter struct {
	mu         sync.Mutex
	mode       ConnLog
	second     time.Time // start of the current second
	used       int
	suppressed int
}

func (l *connLimiter) set(mode ConnLog) {
	l.mu.Lock()
	l.mode = mode
	l.mu.Unlock()
}

// allow reports whether a connection line at now may be written.
func (l *connLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.mode.Off:
		return false
	case l.mode.Rate == 0:
		return true
	}
	if now.Sub(l.second) >= time.Second {
		l.second, l.used = now.Truncate(time.Second), 0
	}
	if l.used < l.mode.Rate {
		l.used++
		return true
	}
	l.suppressed++
	return false
}

// takeSuppressed returns and resets the count of lines held back.
func (l *connLimiter) takeSuppressed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.suppressed
	l.suppressed = 0
	return n
}

func (l *connLimiter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode.String()
}
