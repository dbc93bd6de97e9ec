package limit

import (
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/ports"
)

func TestLimitsParseAndPrint(t *testing.T) {
	for s, want := range map[string]Limit{
		"22/tcp=6/30s":           {Port: ports.Port{Num: 22}, Count: 6, Window: 30 * time.Second},
		" 22/TCP=6/30s ":         {Port: ports.Port{Num: 22}, Count: 6, Window: 30 * time.Second},
		"993/tcp=10/5m:drop":     {Port: ports.Port{Num: 993}, Count: 10, Window: 5 * time.Minute, Action: Drop},
		"3389/tcp=3/1h:escalate": {Port: ports.Port{Num: 3389}, Count: 3, Window: time.Hour, Action: Escalate},
		"5060/udp=50/10s":        {Port: ports.Port{Num: 5060, Proto: ports.UDP}, Count: 50, Window: 10 * time.Second, Action: Drop},
		"5060/udp=50/10s:drop":   {Port: ports.Port{Num: 5060, Proto: ports.UDP}, Count: 50, Window: 10 * time.Second, Action: Drop},
		"65535/tcp=64/24h":       {Port: ports.Port{Num: 65535}, Count: MaxCount, Window: MaxWindow},
		"22/tcp=1/90s":           {Port: ports.Port{Num: 22}, Count: 1, Window: 90 * time.Second},
	} {
		got, err := Parse(s)
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", s, got, err, want)
			continue
		}
		if again, err := Parse(got.String()); err != nil || again != got {
			t.Errorf("%q printed as %q reads back as %+v, %v", s, got.String(), again, err)
		}
	}
}

func TestBadLimitsSayWhatIsWrong(t *testing.T) {
	for s, why := range map[string]string{
		"22":                       `no "="`,
		"22=6/30s":                 "names no protocol",
		"0/tcp=6/30s":              "not a port",
		"70000/tcp=6/30s":          "not a port",
		"22/sctp=6/30s":            "not a protocol",
		"22/tcp=6":                 "not COUNT/WINDOW",
		"22/tcp=0/30s":             "not 1 to 64",
		"22/tcp=65/30s":            "not 1 to 64",
		"22/tcp=6/30":              "not a duration",
		"22/tcp=6/500ms":           "must be whole seconds",
		"22/tcp=6/1500ms":          "must be whole seconds",
		"22/tcp=6/25h":             "must be whole seconds",
		"22/tcp=6/30s:ban":         "not an action",
		"5060/udp=50/10s:escalate": "only throttles",
	} {
		_, err := Parse(s)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), Form) || !strings.Contains(err.Error(), s) {
			t.Errorf("%q: %v; want an error with %q, the value and the form", s, err, why)
		}
	}
}

func TestOnePortHasOneLimit(t *testing.T) {
	ls, err := ParseList([]string{"443/tcp=20/10s", "22/tcp=6/30s", "22/udp=5/10s"})
	if err != nil || len(ls) != 3 || ls[0].Port.Num != 22 || ls[2].Port.Proto != ports.UDP {
		t.Fatalf("%+v, %v: want three, TCP first by port", ls, err)
	}
	if _, err := ParseList([]string{"22/tcp=6/30s", "22/tcp=3/60s:drop"}); err == nil || !strings.Contains(err.Error(), "has a limit already") {
		t.Errorf("a port limited twice: %v", err)
	}
}
