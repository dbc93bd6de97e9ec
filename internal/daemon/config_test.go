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
	var untagged func(typ reflect.Type, path string)
	untagged = func(typ reflect.Type, path string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			switch {
			case f.Tag.Get("flag") != "" || f.Name == "SSHConnection":
			case f.Type.Kind() == reflect.Struct:
				untagged(f.Type, path+f.Name+".")
			default:
				t.Errorf("Start.%s%s has no flag tag", path, f.Name)
			}
		}
	}
	untagged(reflect.TypeFor[Start](), "")
	next = old
	next.Fleet.MinReporters = 3
	next.Fleet.ShareScans = false
	next.Fleet.ShareManual = false
	if got, want := restartOnly(old, next), []string{"fleet-share", "fleet-min-reporters"}; !slices.Equal(got, want) {
		t.Errorf("fleet changes %v, want %v", got, want)
	}
}
