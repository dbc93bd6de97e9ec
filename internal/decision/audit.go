package decision

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
)

// Audit is the append-only record of every change asked through the API:
// who, what, when, and whether hbf did it.
type Audit struct {
	mu sync.Mutex
	f  *os.File
}

type auditRecord struct {
	Time   time.Time `json:"time"`
	UID    int       `json:"uid"`
	PID    int       `json:"pid,omitempty"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Prefix string    `json:"prefix,omitempty"`
	For    string    `json:"for,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Result string    `json:"result"` // accepted, refused
	Error  string    `json:"error,omitempty"`
}

// OpenAudit opens the audit log in the state folder dir.
func OpenAudit(dir string) (*Audit, error) {
	f, err := os.OpenFile(filepath.Join(dir, "audit.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return &Audit{f: f}, nil
}

// Write records a change of target asked by c, and its result.
func (a *Audit) Write(c api.Caller, action, target string, r api.Result, d time.Duration, reason string) {
	rec := auditRecord{Time: time.Now(), UID: c.UID, PID: c.PID, Action: action, Target: target,
		Reason: reason, Result: "accepted"}
	if r.Prefix.IsValid() {
		rec.Prefix = r.Prefix.String()
	}
	if d != 0 {
		rec.For = d.String()
	}
	if !r.OK {
		rec.Result, rec.Error = "refused", r.Error
	}
	a.append(rec)
}

// Change records a setting changed through the API.
func (a *Audit) Change(c api.Caller, action, value string, err error) {
	rec := auditRecord{Time: time.Now(), UID: c.UID, PID: c.PID, Action: action, Target: value, Result: "accepted"}
	if err != nil {
		rec.Result, rec.Error = "refused", err.Error()
	}
	a.append(rec)
}

// Event records an action without a target: a stop, an uninstall.
func (a *Audit) Event(c api.Caller, action string) {
	a.append(auditRecord{Time: time.Now(), UID: c.UID, PID: c.PID, Action: action, Result: "accepted"})
}

func (a *Audit) append(rec auditRecord) {
	line, _ := json.Marshal(rec)
	a.mu.Lock()
	defer a.mu.Unlock()
	_, _ = a.f.Write(append(line, '\n'))
}

// Close closes the log.
func (a *Audit) Close() error { return a.f.Close() }
