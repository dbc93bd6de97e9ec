package dataplane

import (
	"reflect"
	"testing"
)

func allDropReasons() []DropReason {
	out := make([]DropReason, numDropReasons)
	for i := range out {
		out[i] = DropReason(i)
	}
	return out
}

// The table is the one declaration of the program's counters: it must
// hold each counter of hbf.h once, fill each field of Counters once, and
// name each once in status and metrics.
func TestCounterTable(t *testing.T) {
	seen := map[hbfCounter]bool{}
	var k Counters
	fields := map[*uint64]string{}
	names := map[string]bool{}
	series := map[[2]string]bool{}
	for _, c := range counterTable {
		if seen[c.index] {
			t.Errorf("counter %d is in the table twice", c.index)
		}
		seen[c.index] = true
		if f := c.field(&k); fields[f] != "" {
			t.Errorf("%s and %s fill the same field", c.Metric, fields[f])
		} else {
			fields[f] = c.Metric
		}
		if c.Status != "" && names[c.Status] {
			t.Errorf("status key %q twice", c.Status)
		}
		names[c.Status] = true
		if key := [2]string{c.Metric, c.Reason}; c.Metric == "" || c.Help == "" || series[key] {
			t.Errorf("counter %d: metric %q{reason=%q} missing, without help, or twice", c.index, c.Metric, c.Reason)
		} else {
			series[key] = true
		}
	}
	for i := hbfCounter(0); i < hbfCounterCOUNTER_MAX; i++ {
		if !seen[i] {
			t.Errorf("counter %d of the program is not in the table", i)
		}
	}
	if len(counterTable) != int(hbfCounterCOUNTER_MAX) {
		t.Errorf("the table has %d counters, the program %d", len(counterTable), hbfCounterCOUNTER_MAX)
	}
	// Every uint64 of Counters is some counter's.
	slots := 0
	typ := reflect.TypeFor[Counters]()
	for i := range typ.NumField() {
		if f := typ.Field(i); f.Type.Kind() == reflect.Array {
			slots += f.Type.Len()
		} else {
			slots++
		}
	}
	if slots != len(fields) {
		t.Errorf("Counters has %d values, the table fills %d", slots, len(fields))
	}
	for _, r := range allDropReasons() {
		if dropLabels[r] == "" {
			t.Errorf("drop reason %d has no label", r)
		}
	}
}

func TestMaxPortsLimitFollowsTheProgram(t *testing.T) {
	if MaxPortsLimit != 32 || len(hbfScanState{}.Slots) != MaxPortsLimit+1 {
		t.Errorf("MaxPortsLimit %d, tracker slots %d", MaxPortsLimit, len(hbfScanState{}.Slots))
	}
}
