package deploy

import (
	"os/exec"
	"testing"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

// The alert rules are valid, and each fires (and only then) on the series
// of alerts_test.yaml. test/e2e evaluates them on a real hbf's metrics.
func TestAlertRules(t *testing.T) {
	testenv.RequireCommand(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yaml"},
		{"test", "rules", "alerts_test.yaml"},
	} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = "../../deploy/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
