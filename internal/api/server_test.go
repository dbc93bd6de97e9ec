package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// okService answers every request; the tests are about what reaches it.
type okService struct{ calls int }

func (s *okService) Block(context.Context, Caller, ChangeRequest) []Result {
	s.calls++
	return []Result{{OK: true}}
}
func (s *okService) Unblock(context.Context, Caller, ChangeRequest) []Result  { return nil }
func (s *okService) Allow(context.Context, Caller, ChangeRequest) []Result    { return nil }
func (s *okService) Disallow(context.Context, Caller, ChangeRequest) []Result { return nil }
func (s *okService) Blocks(context.Context, func(Block) error) error          { return nil }
func (s *okService) Allows(context.Context) ([]Allow, error)                  { return nil, nil }
func (s *okService) Why(context.Context, netip.Addr) (Why, error)             { return Why{}, nil }
func (s *okService) Status(context.Context) (Status, error)                   { return Status{}, nil }
func (s *okService) Top(_ context.Context, n int) (Top, error) {
	return Top{Sources: make([]TopSource, 0, n)}, nil
}
func (s *okService) Fleet(context.Context) (FleetStatus, error) { return FleetStatus{}, nil }
func (s *okService) Events(context.Context, bool, func(json.RawMessage) error) error {
	return nil
}
func (s *okService) SetMode(context.Context, Caller, string) error { return nil }
func (s *okService) Reload(context.Context, Caller) error          { return nil }
func (s *okService) Stop(context.Context, Caller) error            { return nil }
func (s *okService) Uninstall(context.Context, Caller) error       { return nil }

func request(uid int, body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/block", strings.NewReader(body))
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, Caller{UID: uid}))
}

func TestOnlyRootIsServed(t *testing.T) {
	svc := &okService{}
	h := Handler(svc)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, request(1000, `{"targets":["192.0.2.7"]}`))
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "root-only") || svc.calls != 0 {
		t.Errorf("uid 1000: %d %s (calls %d)", rec.Code, rec.Body, svc.calls)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, request(0, `{"targets":["192.0.2.7"]}`))
	if rec.Code != http.StatusOK || svc.calls != 1 {
		t.Errorf("root: %d %s", rec.Code, rec.Body)
	}
	// No credentials at all count as nobody.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/status", nil))
	if rec.Code != http.StatusForbidden {
		t.Errorf("no caller: %d", rec.Code)
	}
}

func TestRequestBodiesAreBounded(t *testing.T) {
	svc := &okService{}
	rec := httptest.NewRecorder()
	Handler(svc).ServeHTTP(rec, request(0, `{"targets":["`+strings.Repeat("1", maxBody)+`"]}`))
	if rec.Code != http.StatusBadRequest || svc.calls != 0 {
		t.Errorf("oversized body: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	Handler(svc).ServeHTTP(rec, request(0, `{"targets":["192.0.2.7"],"sudo":true}`))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "unknown field") {
		t.Errorf("unknown field: %d %s", rec.Code, rec.Body)
	}
}
