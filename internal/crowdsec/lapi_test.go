package crowdsec

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fakeLAPI answers the decision stream with body, for the bouncer key
// "key", and records each request's query.
func fakeLAPI(t *testing.T, status int, body string) (*Client, *[]string) {
	t.Helper()
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/decisions/stream" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("X-Api-Key") != "key" {
			http.Error(w, `{"message":"access forbidden"}`, http.StatusForbidden)
			return
		}
		queries = append(queries, r.URL.RawQuery)
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{URL: srv.URL + "/", APIKey: "key", Origins: []string{"cscli", "CAPI"},
		ScenariosNotContaining: []string{"http"}})
	if err != nil {
		t.Fatal(err)
	}
	return c, &queries
}

func TestStreamReadsNewAndDeleted(t *testing.T) {
	c, queries := fakeLAPI(t, 200, `{"new":[{"id":1,"origin":"cscli","type":"ban","scope":"Ip","value":"192.0.2.99",
		"duration":"59m59.02s","scenario":"manual 'ban' from 'x'"}],"deleted":[{"id":2,"origin":"CAPI","type":"ban",
		"scope":"ip","value":"198.51.100.7/32","duration":"-1h","scenario":"ssh-bf"}]}`)
	ch, err := c.Stream(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.New) != 1 || ch.New[0].Value != "192.0.2.99" || len(ch.Deleted) != 1 || ch.Deleted[0].ID != 2 {
		t.Fatalf("changes %+v", ch)
	}
	if q := (*queries)[0]; !strings.Contains(q, "startup=true") || !strings.Contains(q, "origins=cscli%2CCAPI") ||
		!strings.Contains(q, "scenarios_not_containing=http") {
		t.Errorf("query %q lacks startup or the filters", q)
	}
}

func TestStreamWithNothingNew(t *testing.T) {
	c, _ := fakeLAPI(t, 200, `{"new":null,"deleted":null}`)
	ch, err := c.Stream(context.Background(), false)
	if err != nil || len(ch.New)+len(ch.Deleted) != 0 {
		t.Fatalf("changes %+v, %v", ch, err)
	}
}

func TestStreamErrorsSayWhatIsWrong(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		key    string
		want   string
	}{
		{200, `<html>proxy error</html>`, "key", "is not the JSON expected"},
		{200, `{"new":[`, "key", "cut short"},
		{500, `{"message":"database locked"}`, "key", "500 Internal Server Error: {\"message\":\"database locked\"}"},
		{200, `{}`, "wrong", "403 Forbidden: {\"message\":\"access forbidden\"}: the key is not a bouncer's"},
	} {
		c, _ := fakeLAPI(t, tc.status, tc.body)
		c.cfg.APIKey = tc.key
		_, err := c.Stream(context.Background(), false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%d %q: error %v, want one saying %q", tc.status, tc.body, err, tc.want)
		}
		var se *StatusError
		if tc.status != 200 && !errors.As(err, &se) {
			t.Errorf("%d: %T is not a *StatusError", tc.status, err)
		}
	}
}

func TestNewRefusesABadURL(t *testing.T) {
	for _, u := range []string{"127.0.0.1:8080", "ftp://lapi", "http://"} {
		if _, err := New(Config{URL: u}); err == nil || !strings.Contains(err.Error(), "http://host:port") {
			t.Errorf("%q: %v", u, err)
		}
	}
}

func TestDecisionPrefix(t *testing.T) {
	for _, tc := range []struct {
		d    Decision
		want string
		skip Skip
	}{
		{Decision{Type: "ban", Scope: "Ip", Value: "192.0.2.7"}, "192.0.2.7/32", ""},
		{Decision{Type: "ban", Scope: "ip", Value: "192.0.2.7/32"}, "192.0.2.7/32", ""}, // CAPI's form
		{Decision{Type: "Ban", Scope: "Range", Value: "198.51.100.0/24"}, "198.51.100.0/24", ""},
		{Decision{Type: "ban", Scope: "range", Value: "2001:db8:1::/48"}, "2001:db8:1::/48", ""},
		{Decision{Type: "ban", Scope: "Ip", Value: "2001:db8::7"}, "2001:db8::7/128", ""},
		{Decision{Type: "ban", Scope: "Ip", Value: "::ffff:192.0.2.7"}, "192.0.2.7/32", ""},
		{Decision{Type: "ban", Scope: "Range", Value: "0.0.0.0/0"}, "0.0.0.0/0", ""}, // the policy refuses it
		{Decision{Type: "captcha", Scope: "Ip", Value: "192.0.2.7"}, "", SkipType},
		{Decision{Type: "ban", Scope: "Country", Value: "FR"}, "", SkipScope},
		{Decision{Type: "ban", Scope: "Ip", Value: "192.0.2.300"}, "", SkipValue},
		{Decision{Type: "ban", Scope: "Range", Value: "198.51.100.7/24"}, "", SkipValue}, // host bits
		{Decision{Type: "ban", Scope: "Ip", Value: "198.51.100.0/24"}, "", SkipValue},
	} {
		p, err := tc.d.Prefix()
		var se *SkipError
		switch {
		case tc.skip != "" && (!errors.As(err, &se) || se.Reason != tc.skip):
			t.Errorf("%+v: %v, want a skip for %s", tc.d, err, tc.skip)
		case tc.skip == "" && (err != nil || p != netip.MustParsePrefix(tc.want)):
			t.Errorf("%+v: %v, %v; want %s", tc.d, p, err, tc.want)
		}
	}
}

func TestDecisionExpires(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	if got, err := (Decision{Duration: "59m59.5s"}).Expires(now); err != nil || !got.Equal(now.Add(59*time.Minute+59500*time.Millisecond)) {
		t.Errorf("59m59.5s: %v, %v", got, err)
	}
	for _, d := range []string{"-3s", "0s", "soon", ""} {
		var se *SkipError
		if _, err := (Decision{Duration: d}).Expires(now); !errors.As(err, &se) || se.Reason != SkipDuration {
			t.Errorf("%q: %v, want a duration skip", d, err)
		}
	}
}
