package report

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/ports"
)

func TestTextLines(t *testing.T) {
	at := time.Date(2026, 11, 27, 15, 28, 5, 0, time.Local)
	for _, tc := range []struct {
		ev   Event
		want string
	}{
		{&Connection{Time: at, Src: netip.MustParseAddrPort("192.0.2.56:5973"), Dst: netip.MustParseAddrPort("10.0.0.5:80")},
			"2026-11-27 15:28:05: New connection: 192.0.2.56:5973 -> 10.0.0.5:80"},
		{&Connection{Time: at, Src: netip.MustParseAddrPort("[2001:db8::56]:5973"), Dst: netip.MustParseAddrPort("[2001:db8::1]:80")},
			"2026-11-27 15:28:05: New connection: [2001:db8::56]:5973 -> [2001:db8::1]:80"},
		{&Scan{Time: at, Src: netip.MustParseAddr("192.0.2.56"), Dst: netip.MustParseAddr("10.0.0.5"), Ports: tcp(80, 81, 82, 83)},
			"2026-11-27 15:28:05: Port scan detected: 192.0.2.56 -> 10.0.0.5 on ports 80,81,82,83"},
		{&Scan{Time: at, Src: netip.MustParseAddr("192.0.2.56"), Dst: netip.MustParseAddr("10.0.0.5"), Ports: tcp(1, 2), Allowlisted: true},
			"2026-11-27 15:28:05: Port scan detected: 192.0.2.56 -> 10.0.0.5 on ports 1,2 (allowlisted, not blocked)"},
		{&Scan{Time: at, Src: netip.MustParseAddr("192.0.2.66"), Dst: netip.MustParseAddr("10.0.0.5"), Ports: udp(53, 123, 161, 500)},
			"2026-11-27 15:28:05: Port scan detected: 192.0.2.66 -> 10.0.0.5 on ports 53/udp,123/udp,161/udp,500/udp"},
		{&Scan{Time: at, Src: netip.MustParseAddr("192.0.2.66"), Dst: netip.MustParseAddr("10.0.0.5"),
			Ports: append(tcp(22, 80), udp(53, 161)...), ReportOnly: true},
			"2026-11-27 15:28:05: Port scan detected: 192.0.2.66 -> 10.0.0.5 on ports 22,80,53/udp,161/udp (UDP scans are reported only: not blocked)"},
		{&Block{Time: at, Prefix: netip.MustParsePrefix("192.0.2.56/32"), Reason: "port scan", Duration: time.Hour},
			"2026-11-27 15:28:05: Blocked 192.0.2.56 for 1h0m0s: port scan"},
		{&Limit{Time: at, Src: netip.MustParseAddr("192.0.2.70"), Dst: netip.MustParseAddr("10.0.0.5"), Port: ports.Port{Num: 22},
			Count: 6, Window: 30 * time.Second},
			"2026-11-27 15:28:05: Connection limit: 192.0.2.70 -> 10.0.0.5 port 22/tcp, 7 connections in 30s"},
		{&Block{Time: at, Prefix: netip.MustParsePrefix("192.0.2.70/32"), Reason: "connection limit 22/tcp", Duration: time.Hour},
			"2026-11-27 15:28:05: Blocked 192.0.2.70 for 1h0m0s: connection limit 22/tcp"},
		{&Limit{Time: at, Src: netip.MustParseAddr("2001:db8:1::70"), Dst: netip.MustParseAddr("2001:db8::1"),
			Port: ports.Port{Num: 5060, Proto: ports.UDP}, Count: 50, Window: 10 * time.Second, Throttled: true,
			Prefix: netip.MustParsePrefix("2001:db8:1::/64")},
			"2026-11-27 15:28:05: Connection limit: 2001:db8:1::70 -> 2001:db8::1 port 5060/udp, 51 datagrams in 10s (counted over 2001:db8:1::/64) (throttled: its datagrams to the port are dropped)"},
		{&Block{Time: at, Prefix: netip.MustParsePrefix("198.51.100.0/24"), Reason: "port scan"},
			"2026-11-27 15:28:05: Blocked 198.51.100.0/24 permanently: port scan"},
	} {
		var buf bytes.Buffer
		if err := NewWriter(&buf, Text).Write(tc.ev); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSuffix(buf.String(), "\n"); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func TestJSONLines(t *testing.T) {
	at := time.Date(2026, 11, 27, 15, 28, 5, 0, time.UTC)
	var buf bytes.Buffer
	w := NewWriter(&buf, JSON)
	evs := []Event{
		&Connection{Time: at, Iface: "eth0", Src: netip.MustParseAddrPort("192.0.2.56:5973"), Dst: netip.MustParseAddrPort("10.0.0.5:80")},
		&Scan{Time: at, Iface: "eth0", Src: netip.MustParseAddr("192.0.2.56"), Dst: netip.MustParseAddr("10.0.0.5"), Ports: tcp(80, 81, 82, 83)},
		&Scan{Time: at, Iface: "eth0", Src: netip.MustParseAddr("192.0.2.66"), Dst: netip.MustParseAddr("10.0.0.5"), Ports: udp(53, 123, 161, 500)},
		&Scan{Time: at, Iface: "eth0", Src: netip.MustParseAddr("192.0.2.66"), Dst: netip.MustParseAddr("10.0.0.5"),
			Ports: append(tcp(22), udp(53, 161, 500)...), ReportOnly: true},
		&Block{Time: at, Prefix: netip.MustParsePrefix("192.0.2.56/32"), Reason: "port scan", Duration: time.Hour, Expires: at.Add(time.Hour)},
		&Block{Time: at, Prefix: netip.MustParsePrefix("2001:db8::/32"), Reason: "blocklist"},
	}
	for _, ev := range evs {
		if err := w.Write(ev); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		`{"time":"2026-11-27T15:28:05.000Z","event":"connection","iface":"eth0","src":"192.0.2.56","src_port":5973,"dst":"10.0.0.5","dst_port":80}`,
		`{"time":"2026-11-27T15:28:05.000Z","event":"portscan","iface":"eth0","src":"192.0.2.56","dst":"10.0.0.5","ports":[80,81,82,83]}`,
		`{"time":"2026-11-27T15:28:05.000Z","event":"portscan","iface":"eth0","src":"192.0.2.66","dst":"10.0.0.5","ports":[],"udp_ports":[53,123,161,500]}`,
		`{"time":"2026-11-27T15:28:05.000Z","event":"portscan","iface":"eth0","src":"192.0.2.66","dst":"10.0.0.5","ports":[22],"udp_ports":[53,161,500],"report_only":true}`,
		`{"time":"2026-11-27T15:28:05.000Z","event":"block","prefix":"192.0.2.56","reason":"port scan","duration":"1h0m0s","expires":"2026-11-27T16:28:05.000Z"}`,
		`{"time":"2026-11-27T15:28:05.000Z","event":"block","prefix":"2001:db8::/32","reason":"blocklist","duration":"permanent"}`,
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, line := range lines {
		if line != want[i] {
			t.Errorf("line %d:\n got  %s\n want %s", i, line, want[i])
		}
		if !json.Valid([]byte(line)) {
			t.Errorf("line %d is not JSON", i)
		}
		back, err := ParseJSON([]byte(line))
		if err != nil {
			t.Errorf("line %d does not parse back: %v", i, err)
		} else if sc, ok := back.(*Scan); ok && ports.Join(sc.Ports) != ports.Join(evs[i].(*Scan).Ports) {
			t.Errorf("line %d parses back to ports %s, want %s", i, ports.Join(sc.Ports), ports.Join(evs[i].(*Scan).Ports))
		}
	}
}

func TestOperatorEventLines(t *testing.T) {
	at := time.Date(2026, 11, 27, 15, 28, 5, 0, time.Local)
	p := netip.MustParsePrefix("192.0.2.7/32")
	for _, tc := range []struct {
		ev   Event
		want string
	}{
		{&Unblock{Time: at, Prefix: p, By: "uid 0"}, "2026-11-27 15:28:05: Unblocked 192.0.2.7 (uid 0)"},
		{&Allow{Time: at, Prefix: netip.MustParsePrefix("198.51.100.0/24"), Reason: "office", By: "uid 0"},
			"2026-11-27 15:28:05: Allowed 198.51.100.0/24 permanently: office (uid 0)"},
		{&Allow{Time: at, Prefix: p, Duration: time.Hour, Expires: at.Add(time.Hour), By: "uid 0"},
			"2026-11-27 15:28:05: Allowed 192.0.2.7 for 1h0m0s (uid 0)"},
		{&Disallow{Time: at, Prefix: p, By: "uid 0"}, "2026-11-27 15:28:05: Disallowed 192.0.2.7 (uid 0)"},
		{&Suppressed{Time: at, Count: 1234}, "2026-11-27 15:28:05: 1234 connection lines suppressed"},
	} {
		var buf bytes.Buffer
		NewWriter(&buf, Text).Write(tc.ev)
		if got := strings.TrimSuffix(buf.String(), "\n"); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

// `hbf events` turns the daemon's JSON lines back into text: every event
// must come back as it was.
func TestJSONRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 27, 15, 28, 5, 0, time.UTC)
	for _, ev := range []Event{
		&Connection{Time: at, Iface: "eth0", Src: netip.MustParseAddrPort("[2001:db8::56]:5973"), Dst: netip.MustParseAddrPort("[2001:db8::1]:80")},
		&Scan{Time: at, Src: netip.MustParseAddr("192.0.2.56"), Dst: netip.MustParseAddr("10.0.0.5"), Ports: tcp(1, 2, 3, 4), Allowlisted: true},
		&Block{Time: at, Prefix: netip.MustParsePrefix("198.51.100.0/24"), Reason: "port scan", Duration: time.Hour, Expires: at.Add(time.Hour)},
		&Limit{Time: at, Src: netip.MustParseAddr("2001:db8:1::70"), Dst: netip.MustParseAddr("2001:db8::1"),
			Port: ports.Port{Num: 22}, Count: 3, Window: time.Minute, Allowlisted: true, Prefix: netip.MustParsePrefix("2001:db8:1::/64")},
		&Limit{Time: at, Src: netip.MustParseAddr("192.0.2.70"), Dst: netip.MustParseAddr("10.0.0.5"),
			Port: ports.Port{Num: 5060, Proto: ports.UDP}, Count: 50, Window: 10 * time.Second, Throttled: true},
		&Block{Time: at, Prefix: netip.MustParsePrefix("192.0.2.7/32"), Reason: "manual block"},
		&Unblock{Time: at, Prefix: netip.MustParsePrefix("192.0.2.7/32"), By: "uid 0"},
		&Allow{Time: at, Prefix: netip.MustParsePrefix("192.0.2.7/32"), Duration: time.Hour, Expires: at.Add(time.Hour), By: "uid 0"},
		&Disallow{Time: at, Prefix: netip.MustParsePrefix("192.0.2.7/32"), By: "uid 0"},
		&Suppressed{Time: at, Count: 1234},
	} {
		line, err := AppendJSON(nil, ev)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseJSON(line)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		var a, b bytes.Buffer
		NewWriter(&a, Text).Write(ev)
		NewWriter(&b, Text).Write(back)
		if a.String() != b.String() {
			t.Errorf("round trip of %s:\n got  %s want %s", line, b.String(), a.String())
		}
	}
}

func tcp(nums ...uint16) []ports.Port {
	out := make([]ports.Port, len(nums))
	for i, n := range nums {
		out[i] = ports.Port{Num: n}
	}
	return out
}

func udp(nums ...uint16) []ports.Port {
	out := tcp(nums...)
	for i := range out {
		out[i].Proto = ports.UDP
	}
	return out
}
