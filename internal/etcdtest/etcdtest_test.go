package etcdtest

import (
	"strings"
	"testing"
)

func TestServerKeepsItsDataAcrossARestart(t *testing.T) {
	s := Start(t, Options{})
	s.MustCtl("put", "/hbf/x", "1")
	s.MustCtl("put", "/hbf/x", "2")
	rev := s.Compact()
	if rev < 3 {
		t.Errorf("compacted at revision %d", rev)
	}
	s.Restart()
	if out := s.MustCtl("get", "/hbf/x", "--print-value-only"); strings.TrimSpace(out) != "2" {
		t.Errorf("after a restart: %q", out)
	}
	if _, err := s.Ctl("get", "/hbf/x", "--rev", "2"); err == nil || !strings.Contains(err.Error(), "compacted") {
		t.Errorf("a read below the compaction: %v", err)
	}
}
