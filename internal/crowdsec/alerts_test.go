package crowdsec

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMachines is a LAPI's login and alerts endpoints: it hands out
// numbered tokens and takes only the latest.
type fakeMachines struct {
	mu     sync.Mutex
	logins int
	alerts []Alert
}

func (f *fakeMachines) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/v1/watchers/login":
		var in struct {
			MachineID string `json:"machine_id"`
			Password  string `json:"password"`
		}
		if json.NewDecoder(r.Body).Decode(&in) != nil || in.MachineID != "hbf" || in.Password != "secret" {
			http.Error(w, `{"message":"incorrect Username or Password"}`, http.StatusUnauthorized)
			return
		}
		f.logins++
		json.NewEncoder(w).Encode(loginAnswer{Code: 200, Expire: time.Now().Add(time.Hour).Format(time.RFC3339),
			Token: "t" + string(rune('0'+f.logins))})
	case "/v1/alerts":
		if r.Header.Get("Authorization") != "Bearer t"+string(rune('0'+f.logins)) {
			http.Error(w, `{"message":"token expired"}`, http.StatusUnauthorized)
			return
		}
		var in []Alert
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.alerts = append(f.alerts, in...)
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode([]string{"1"})
	default:
		http.NotFound(w, r)
	}
}

func TestWatcherPushesAndLogsInAgain(t *testing.T) {
	f := &fakeMachines{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c, err := New(Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWatcher(c, "hbf", "secret", []string{"hbf/port-scan"})
	alert := Alert{Scenario: "hbf/port-scan", Source: AlertSource{Scope: "Ip", Value: "192.0.2.7", IP: "192.0.2.7"},
		Decisions: []AlertBanning{{Duration: Seconds(time.Hour), Origin: "hbf", Scope: "Ip", Type: "ban", Value: "192.0.2.7"}}}
	if ids, err := w.Push(context.Background(), []Alert{alert}); err != nil || len(ids) != 1 {
		t.Fatalf("push: %v, %v", ids, err)
	}
	if _, err := w.Push(context.Background(), []Alert{alert}); err != nil || f.logins != 1 {
		t.Fatalf("a second push: %v, %d logins; want the token kept", err, f.logins)
	}
	// LAPI restarted and forgot the token: one login again, then the push.
	f.mu.Lock()
	f.logins++
	f.mu.Unlock()
	if _, err := w.Push(context.Background(), []Alert{alert}); err != nil || f.logins != 3 {
		t.Fatalf("a push after LAPI forgot the token: %v, %d logins", err, f.logins)
	}
	if len(f.alerts) != 3 || f.alerts[0].Decisions[0].Duration != "3600s" {
		t.Errorf("LAPI holds %+v", f.alerts)
	}
}

func TestWatcherSaysWhyItCannotLogIn(t *testing.T) {
	srv := httptest.NewServer(&fakeMachines{})
	defer srv.Close()
	c, _ := New(Config{URL: srv.URL})
	_, err := NewWatcher(c, "hbf", "wrong", nil).Push(context.Background(), []Alert{{}})
	if err == nil || !strings.Contains(err.Error(), `log in to LAPI as machine "hbf"`) || !strings.Contains(err.Error(), "401") {
		t.Errorf("error %v", err)
	}
}
