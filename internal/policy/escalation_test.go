package policy

import (
	"testing"
	"time"
)

func TestEscalation(t *testing.T) {
	e := DefaultEscalation
	for offence, want := range map[int]time.Duration{1: time.Hour, 2: 24 * time.Hour, 3: 168 * time.Hour, 4: 0, 9: 0} {
		if got := e.Duration(offence, time.Hour); got != want {
			t.Errorf("offence %d: %v, want %v", offence, got, want)
		}
	}
	if (Escalation{}).Duration(5, time.Hour) != time.Hour {
		t.Error("without a schedule every offence gets the block duration")
	}
	after, err := ParseSchedule("2h, 0")
	if err != nil || len(after) != 2 || after[0] != 2*time.Hour || after[1] != 0 {
		t.Errorf("ParseSchedule: %v %v", after, err)
	}
	if s := (Escalation{After: after}).String(); s != "2h0m0s,0" {
		t.Errorf("String: %q", s)
	}
	for _, bad := range []string{"2h,soon", "-1h"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
