package daemon

import (
	"reflect"
	"slices"
	"testing"
)

func TestRestartOnlyNamesTheFlags(t *testing.T) {
	old := Defaults.Start
	old.Ifaces = []string{"eth0"}
	next := old
	next.Ifaces = []string{"eth1"}
	next.Socket = "/run/other.sock"
	next.DetachOnExit = true
	if got, want := restartOnly(old, next), []string{"iface", "socket", "detach-on-exit"}; !slices.Equal(got, want) {
		t.Errorf("restart-only changes %v, want %v", got, want)
	}
	if got := restartOnly(old, old); len(got) != 0 {
		t.Errorf("no change reported as %v", got)
	}
	// A field added to Start without a flag would change at no restart and
	// never be reported.
	typ := reflect.TypeFor[Start]()
	for i := range typ.NumField() {
		if f := typ.Field(i); f.Tag.Get("flag") == "" && f.Name != "SSHConnection" {
			t.Errorf("Start.%s has no flag tag", f.Name)
		}
	}
}
