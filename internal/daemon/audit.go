package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
)

// auditLog is the append-only record of every change asked through the
// API: who, what, when, and whether hbf did it.
type auditLog struct {
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

func openAudit(dir string) (*auditLog, error) {
	f, err := os.OpenFile(filepath.Join(dir, "audit.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return &auditLog{f: f}, nil
}

func (a *auditLog) write(c api.Caller, action, target string, r api.Result, d time.Duration, reason string) {
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

// change records a setting changed through the API.
func (a *auditLog) change(c api.Caller, action, value string, err error) {
	rec := auditRecord{Time: time.Now(), UID: c.UID, PID: c.PID, Action: action, Target: value, Result: "accepted"}
	if err != nil {
		rec.Result, rec.Error = "refused", err.Error()
	}
	a.append(rec)
}

func (a *auditLog) event(c api.Caller, action string) {
	a.append(auditRecord{Time: time.Now(), UID: c.UID, PID: c.PID, Action: action, Result: "accepted"})
}

func (a *auditLog) append(rec auditRecord) {
	line, _ := json.Marshal(rec)
	a.mu.Lock()
	defer a.mu.Unlock()
	_, _ = a.f.Write(append(line, '\n'))
}

func (a *auditLog) close() error { return a.f.Close() }
