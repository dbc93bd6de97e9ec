package crowdsec

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Alert is what a machine pushes to LAPI: a scenario that fired for a
// source, with the decision it carries. LAPI stores the decision, and
// every bouncer of that LAPI enforces it.
type Alert struct {
	Scenario        string         `json:"scenario"`
	ScenarioHash    string         `json:"scenario_hash"`
	ScenarioVersion string         `json:"scenario_version"`
	Message         string         `json:"message"`
	EventsCount     int32          `json:"events_count"`
	Capacity        int32          `json:"capacity"`
	Leakspeed       string         `json:"leakspeed"`
	Simulated       bool           `json:"simulated"`
	StartAt         string         `json:"start_at"`
	StopAt          string         `json:"stop_at"`
	Source          AlertSource    `json:"source"`
	Events          []AlertEvent   `json:"events"`
	Decisions       []AlertBanning `json:"decisions"`
}

// AlertSource is the source an alert is about.
type AlertSource struct {
	Scope string `json:"scope"` // Ip or Range
	Value string `json:"value"`
	IP    string `json:"ip,omitempty"`
	Range string `json:"range,omitempty"`
}

// AlertEvent is one event of an alert, its facts as key and value pairs.
type AlertEvent struct {
	Timestamp string      `json:"timestamp"`
	Meta      []AlertMeta `json:"meta"`
}

// AlertMeta is one fact of an event: {"key":"port","value":"22"}.
type AlertMeta struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// AlertBanning is the decision an alert carries.
type AlertBanning struct {
	Duration string `json:"duration"`
	Origin   string `json:"origin"`
	Scenario string `json:"scenario"`
	Scope    string `json:"scope"`
	Type     string `json:"type"`
	Value    string `json:"value"`
}

// Watcher pushes alerts as a machine registered with cscli machines add:
// it logs in for a token, and logs in again when the token expires or
// LAPI refuses it.
type Watcher struct {
	c                   *Client
	machineID, password string
	scenarios           []string
	mu                  sync.Mutex
	token               string
	expires             time.Time
	now                 func() time.Time
}

// NewWatcher is a machine's pusher of alerts of these scenarios, on c's
// LAPI.
func NewWatcher(c *Client, machineID, password string, scenarios []string) *Watcher {
	return &Watcher{c: c, machineID: machineID, password: password, scenarios: scenarios, now: time.Now}
}

type loginAnswer struct {
	Code   int    `json:"code"`
	Expire string `json:"expire"`
	Token  string `json:"token"`
}

// login gets a token, unless the one held has a minute left.
func (w *Watcher) login(ctx context.Context, again bool) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !again && w.token != "" && w.now().Add(time.Minute).Before(w.expires) {
		return w.token, nil
	}
	var ans loginAnswer
	body := map[string]any{"machine_id": w.machineID, "password": w.password, "scenarios": w.scenarios}
	if err := w.c.do(ctx, http.MethodPost, "/v1/watchers/login", body, nil, &ans); err != nil {
		if refused(err) {
			err = fmt.Errorf("%w: is the machine registered with this password (cscli machines add %s --password …)?", err, w.machineID)
		}
		return "", fmt.Errorf("log in to LAPI as machine %q: %w", w.machineID, err)
	}
	if ans.Token == "" {
		return "", fmt.Errorf("log in to LAPI as machine %q: no token in the answer", w.machineID)
	}
	w.token = ans.Token
	w.expires = w.now().Add(time.Hour) // LAPI's default; its answer's expiry when it reads
	if t, err := time.Parse(time.RFC3339, ans.Expire); err == nil {
		w.expires = t
	}
	return w.token, nil
}

// Push sends alerts in one request, and returns the ids LAPI gave them.
func (w *Watcher) Push(ctx context.Context, alerts []Alert) ([]string, error) {
	var ids []string
	for attempt := range 2 {
		token, err := w.login(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		err = w.c.do(ctx, http.MethodPost, "/v1/alerts", alerts, map[string]string{"Authorization": "Bearer " + token}, &ids)
		if refused(err) && attempt == 0 {
			continue // the token expired early, or LAPI restarted: log in again
		}
		if err != nil {
			return nil, fmt.Errorf("push %d alerts to LAPI: %w", len(alerts), err)
		}
		return ids, nil
	}
	return ids, nil
}

// Seconds writes a duration as LAPI reads one: "3600s".
func Seconds(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) + "s" }
