// Package top is hbf top: a live view of what the firewall does, drawn in
// the terminal (Bubble Tea), or one snapshot of it when the output is not
// a terminal. It reads the daemon's API like every other verb and changes
// nothing.
package top

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
)

// API is what the view reads of the daemon; *api.Client is one.
type API interface {
	Status(ctx context.Context) (api.Status, error)
	Top(ctx context.Context, n int) (api.Top, error)
	Why(ctx context.Context, addr netip.Addr) (api.Why, error)
	Events(ctx context.Context, follow bool, fn func([]byte) error) error
}

// sample is one look at the daemon.
type sample struct {
	at     time.Time
	status api.Status
	top    api.Top
}

// look takes a sample: the status, then the busiest n sources.
func look(ctx context.Context, c API, n int) (sample, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return sample{}, err
	}
	top, err := c.Top(ctx, n)
	if err != nil {
		return sample{}, err
	}
	return sample{at: time.Now(), status: st, top: top}, nil
}

// Rates are what the counters moved by between two samples, per second.
type Rates struct {
	Span        time.Duration      `json:"span"`
	Packets     float64            `json:"packets"`
	Passed      float64            `json:"passed"`
	Dropped     float64            `json:"dropped"`
	DroppedBy   map[string]float64 `json:"dropped_by"` // reason: blocked, limit, malformed …
	Connections float64            `json:"connections"`
	Scans       float64            `json:"scans"`
	Blocks      float64            `json:"blocks"` // the kernel's: scans and connection limits
	EventsLost  float64            `json:"events_lost"`
}

// ratesBetween are the rates from a to b, a the earlier.
func ratesBetween(a, b sample) Rates {
	r := Rates{Span: b.at.Sub(a.at), DroppedBy: map[string]float64{}}
	secs := r.Span.Seconds()
	if secs <= 0 {
		return r
	}
	per := func(keys ...string) float64 {
		var d float64
		for _, k := range keys {
			// A counter that went back (the maps were made again) moved by
			// its new value.
			now, then := b.status.Counters[k], a.status.Counters[k]
			if now >= then {
				d += float64(now - then)
			} else {
				d += float64(now)
			}
		}
		return d / secs
	}
	r.Packets, r.Passed = per("packets"), per("packets_passed")
	r.Connections, r.Scans = per("new_connections"), per("scans_detected")
	r.Blocks, r.EventsLost = per("scan_blocks", "limit_blocks"), per("events_lost")
	for k := range b.status.Counters {
		if reason, ok := strings.CutPrefix(k, "dropped_"); ok {
			v := per(k)
			if v > 0 {
				r.DroppedBy[reason] = v
			}
			r.Dropped += v
		}
	}
	return r
}
