package daemon

import (
	"context"
	"time"

	"github.com/hbf-firewall/hbf/internal/decision"
)

const (
	// reconcileEvery: how often the kernel and the store are brought in
	// step besides at start and as soon as events are lost. It walks every
	// kernel entry: with a million, ~1 CPU-second each time.
	reconcileEvery = 5 * time.Minute
	backupEvery    = time.Minute
)

// maintain ends expired decisions, reconciles the kernel and the store, and
// backs the store up, until ctx ends.
func (d *daemon) maintain(ctx context.Context) {
	sweep := time.NewTicker(min(max(d.currentProgram().Window, time.Second), 10*time.Second))
	defer sweep.Stop()
	reconcile := time.NewTicker(reconcileEvery)
	defer reconcile.Stop()
	backup := time.NewTicker(backupEvery)
	defer backup.Stop()
	suppressed := time.NewTicker(time.Second)
	defer suppressed.Stop()
	lists := time.NewTicker(2 * time.Second)
	defer lists.Stop()
	lost := d.eventsLost()
	for {
		select {
		case <-ctx.Done():
			return
		case <-suppressed.C:
			d.flushSuppressed()
		case <-lists.C:
			d.watchLists()
		case <-sweep.C:
			if err := d.state.Sweep(d.currentProgram().Window); err != nil {
				d.log.Warn("sweep failed", "err", err)
			}
			lost = d.catchUpLost(lost)
		case <-reconcile.C:
			d.reconcile()
		case <-backup.C:
			d.backup()
		}
	}
}

// catchUpLost reconciles when the program lost events since the count
// was lost, and returns the count now. Lost events may have been scans:
// what they would have told is in the kernel, so look there.
func (d *daemon) catchUpLost(lost uint64) uint64 {
	n := d.eventsLost()
	if n <= lost {
		return lost
	}
	d.log.Warn("events were lost (ring buffer full); reconciling with the kernel", "lost", n-lost)
	d.reconcile()
	return n
}

func (d *daemon) eventsLost() uint64 {
	k, err := d.k.Counters()
	if err != nil {
		return 0
	}
	return k.EventsLost
}

func (d *daemon) reconcile() {
	stats, err := d.state.Reconcile(false)
	if err != nil {
		d.log.Warn("reconciliation failed", "err", err)
	} else if stats != (decision.ReconcileStats{}) {
		d.log.Info("kernel and store brought in step", "written", stats.Written, "removed", stats.Removed,
			"adopted", stats.Adopted, "fixed", stats.Fixed)
	}
}
