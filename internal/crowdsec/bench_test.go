package crowdsec

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkReadSnapshot reads a snapshot of 100,000 decisions, as a
// cscli decisions import of that many answers a startup read, and tracks
// it: the work hbf does between LAPI's answer and the engine.
func BenchmarkReadSnapshot(b *testing.B) {
	decisions := make([]Decision, 100000)
	for i := range decisions {
		decisions[i] = Decision{ID: int64(i + 1), Origin: "cscli-import", Type: "ban", Scope: "Ip",
			Value: fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff), Duration: "3h59m58.5s",
			Scenario: "import decisions.csv"}
	}
	body, err := json.Marshal(Changes{New: decisions})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body) }))
	b.Cleanup(srv.Close)
	c, err := New(Config{URL: srv.URL, APIKey: "key"})
	if err != nil {
		b.Fatal(err)
	}
	var read, tracked time.Duration
	for range b.N {
		start := time.Now()
		ch, err := c.Stream(context.Background(), true)
		if err != nil {
			b.Fatal(err)
		}
		decoded := time.Now()
		t := &Tracker{Now: time.Now}
		if out := t.Apply(ch, true); len(out.Put) != len(decisions) {
			b.Fatalf("tracked %d blocks of %d decisions", len(out.Put), len(decisions))
		}
		read, tracked = read+decoded.Sub(start), tracked+time.Since(decoded)
	}
	b.ReportMetric(read.Seconds()/float64(b.N), "s-read")
	b.ReportMetric(tracked.Seconds()/float64(b.N), "s-track")
}
