package daemon

import (
	"testing"
	"time"
)

func TestConnLimiter(t *testing.T) {
	mode, err := ParseConnLog("rate=3/s")
	if err != nil {
		t.Fatal(err)
	}
	l := &connLimiter{mode: mode}
	at := time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)
	passed := 0
	for i := range 10 {
		if l.allow(at.Add(time.Duration(i) * time.Millisecond)) {
			passed++
		}
	}
	if passed != 3 || l.takeSuppressed() != 7 || l.takeSuppressed() != 0 {
		t.Errorf("first second: %d passed", passed)
	}
	if !l.allow(at.Add(1100 * time.Millisecond)) {
		t.Error("the next second starts afresh")
	}
	l.set(ConnLog{Off: true})
	if l.allow(at.Add(3*time.Second)) || l.takeSuppressed() != 0 {
		t.Error("off lets lines through or counts them as suppressed")
	}
	for _, bad := range []string{"rate=0/s", "rate=-1/s", "rate=x/s", "some"} {
		if _, err := ParseConnLog(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for in, want := range map[string]string{"all": "all", "off": "off", "rate=50/s": "rate=50/s", "rate=7": "rate=7/s"} {
		if got, err := ParseConnLog(in); err != nil || got.String() != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
}
