package dataplane

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

func TestPinPathMustBeOnBPFFS(t *testing.T) {
	err := ensureBPFFS(filepath.Join(t.TempDir(), "pins"))
	if err == nil || !strings.Contains(err.Error(), "is not on a BPF filesystem") {
		t.Errorf("pin path on tmpfs: %v", err)
	}
}

func TestPinnedMapsAreAdopted(t *testing.T) {
	testenv.RequirePrivileged(t)
	if err := ensureBPFFS(DefaultBPFFS); err != nil {
		t.Fatal(err)
	}
	pin, err := os.MkdirTemp(DefaultBPFFS, "hbftest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pin) })

	first, err := Load(Options{PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	if first.Adopted() {
		t.Error("a fresh pin path reported adoption")
	}
	if err := first.Block(mustPrefix("192.0.2.7/32"), noExpiry); err != nil {
		t.Fatal(err)
	}
	if err := first.Block(mustPrefix("198.51.100.0/24"), noExpiry); err != nil {
		t.Fatal(err)
	}
	first.Close()

	second, err := Load(Options{PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if !second.Adopted() {
		t.Error("the pinned maps were not adopted")
	}
	blocks, err := second.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 {
		t.Errorf("adopted %d blocks, want 2", len(blocks))
	}
	// The adopted prefix block must be enforced: the hint follows the map.
	var hint uint32
	if err := second.objs.HbfHaveBlockPrefixes.Get(&hint); err != nil || hint != 1 {
		t.Errorf("prefix hint %d (%v) after adoption, want 1", hint, err)
	}
	if err := second.Unpin(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pin, layoutVersion)); !os.IsNotExist(err) {
		t.Errorf("pins left after Unpin: %v", err)
	}
}
