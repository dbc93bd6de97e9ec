package crowdsec

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/store"
)

func ban(id int64, origin, value, left string) Decision {
	scope := "Ip"
	if netip.MustParsePrefix(mustPrefix(value)).Bits() < netip.MustParsePrefix(mustPrefix(value)).Addr().BitLen() {
		scope = "Range"
	}
	return Decision{ID: id, Origin: origin, Type: "ban", Scope: scope, Value: value, Duration: left, Scenario: "crowdsecurity/ssh-bf"}
}

func mustPrefix(v string) string {
	if a, err := netip.ParseAddr(v); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	return v
}

func newTracker() (*Tracker, *time.Time) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	return &Tracker{Now: func() time.Time { return now }}, &now
}

func puts(o Outcome) map[string]store.Block {
	out := map[string]store.Block{}
	for _, b := range o.Put {
		out[b.Prefix.String()+" "+string(b.Origin)] = b
	}
	return out
}

func TestTrackerKeepsTheLongestDecisionOfEachOrigin(t *testing.T) {
	tr, now := newTracker()
	o := tr.Apply(Changes{New: []Decision{ban(1, "cscli", "192.0.2.7", "1h"), ban(2, "cscli", "192.0.2.7", "4h"),
		ban(3, "CAPI", "192.0.2.7/32", "2h")}}, true)
	p := puts(o)
	if len(p) != 2 || !p["192.0.2.7/32 crowdsec:cscli"].Expires.Equal(now.Add(4*time.Hour)) ||
		!p["192.0.2.7/32 crowdsec:CAPI"].Expires.Equal(now.Add(2*time.Hour)) || !o.Whole {
		t.Fatalf("snapshot %+v", o)
	}
	// The longest cscli one deleted: the block ends with the other.
	o = tr.Apply(Changes{Deleted: []Decision{{ID: 2}}}, false)
	if p := puts(o); len(p) != 1 || !p["192.0.2.7/32 crowdsec:cscli"].Expires.Equal(now.Add(time.Hour)) || len(o.Remove) != 0 {
		t.Fatalf("after deleting the longest: %+v", o)
	}
	// The last cscli one deleted: its block ends; CAPI's stays.
	o = tr.Apply(Changes{Deleted: []Decision{{ID: 1}, {ID: 99}}}, false)
	if len(o.Put) != 0 || len(o.Remove) != 1 || o.Remove[0] != (Ref{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Origin: "cscli"}) {
		t.Fatalf("after deleting the last: %+v", o)
	}
	if held := tr.Held(); len(held) != 1 || held["CAPI"] != 1 {
		t.Errorf("held %v, want CAPI's one", held)
	}
}

func TestTrackerSkipsRefusesAndCaps(t *testing.T) {
	tr, _ := newTracker()
	tr.MaxPerOrigin = 2
	tr.Check = func(p netip.Prefix) error {
		if p.Bits() < 16 || p.Addr() == netip.MustParseAddr("192.0.2.1") {
			return errors.New("refused")
		}
		return nil
	}
	o := tr.Apply(Changes{New: []Decision{
		ban(1, "lists", "198.51.100.1", "1h"), ban(2, "lists", "198.51.100.2", "1h"), ban(3, "lists", "198.51.100.3", "1h"),
		ban(4, "cscli", "10.0.0.0/8", "1h"), ban(5, "cscli", "192.0.2.1", "1h"),
		{ID: 6, Origin: "cscli", Type: "captcha", Scope: "Ip", Value: "198.51.100.9", Duration: "1h"},
		{ID: 7, Origin: "cscli", Type: "ban", Scope: "Country", Value: "FR", Duration: "1h"},
		{ID: 8, Origin: "cscli", Type: "ban", Scope: "Ip", Value: "nonsense", Duration: "1h"},
		{ID: 9, Origin: "cscli", Type: "ban", Scope: "Ip", Value: "198.51.100.9", Duration: "-5s"},
		{ID: 10, Origin: "crowdsec", Type: "ban", Scope: "Ip", Value: "198.51.100.10", Duration: "4h", Scenario: "hbf/port-scan"},
	}}, true)
	if len(o.Put) != 2 {
		t.Errorf("%d blocks, want the 2 lists decisions the cap lets in", len(o.Put))
	}
	if o.Refused[RefusedCap] != 1 || o.Refused[RefusedPolicy] != 2 {
		t.Errorf("refused %v, want 1 over the cap and 2 by the policy", o.Refused)
	}
	for _, s := range Skips {
		if o.Skipped[s] != 1 {
			t.Errorf("skipped %v, want one of each reason", o.Skipped)
			break
		}
	}
	// A deletion frees room under the cap.
	tr.Apply(Changes{Deleted: []Decision{{ID: 1}}}, false)
	if o := tr.Apply(Changes{New: []Decision{ban(3, "lists", "198.51.100.3", "1h")}}, false); len(o.Put) != 1 {
		t.Errorf("a decision after one left: %+v", o)
	}
}

// A snapshot replaces what the tracker held: a decision deleted while the
// stream was not read is gone after it.
func TestTrackerSnapshotReplaces(t *testing.T) {
	tr, _ := newTracker()
	tr.Apply(Changes{New: []Decision{ban(1, "cscli", "192.0.2.7", "1h"), ban(2, "cscli", "192.0.2.8", "1h")}}, true)
	o := tr.Apply(Changes{New: []Decision{ban(2, "cscli", "192.0.2.8", "59m")}}, true)
	if len(o.Put) != 1 || o.Put[0].Prefix != netip.MustParsePrefix("192.0.2.8/32") || len(o.Remove) != 0 || !o.Whole {
		t.Fatalf("snapshot %+v: want 192.0.2.8 alone, the engine ending the rest", o)
	}
	if held := tr.Held(); held["cscli"] != 1 {
		t.Errorf("held %v", held)
	}
}
