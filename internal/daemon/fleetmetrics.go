package daemon

import (
	"slices"

	"github.com/hbf-firewall/hbf/internal/fleet"
	"github.com/hbf-firewall/hbf/internal/metrics"
	"github.com/hbf-firewall/hbf/internal/protect"
)

// fleetStats are the hbf_fleet_ metrics, and what hbf status counts of
// the fleet.
func (d *daemon) fleetStats() metrics.FleetStats {
	fl := d.fleet
	if fl == nil {
		return metrics.FleetStats{}
	}
	counts := fl.node.Counts()
	rejected, errs := map[string]uint64{}, map[string]uint64{}
	for _, r := range slices.Concat(fleet.RejectReasons, protect.MemberRejects) {
		rejected[r] = counts.Rejected[r]
	}
	for _, op := range fleet.Ops {
		errs[op] = counts.Errors[op]
	}
	fl.mu.Lock()
	for reason, n := range fl.rejected {
		rejected[reason] += n
	}
	applied := fl.applied
	fl.mu.Unlock()
	members, _ := fl.node.Members()
	return metrics.FleetStats{Connected: fl.node.Status().Connected, Members: len(members),
		Entries: applied, Published: counts.Published, Rejected: rejected, Errors: errs}
}
