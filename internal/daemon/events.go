package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/report"
)

// publish writes an event to the outputs and to `hbf events`.
func (d *daemon) publish(ev report.Event) {
	d.out.write(ev)
	if line, err := report.AppendJSON(nil, ev); err == nil {
		d.hub.publish(line)
	}
}

// readEvents reports the program's events until ctx ends, then what is
// still in the ring.
func (d *daemon) readEvents(ctx context.Context) {
	rd := d.events
	for {
		ev, err := rd.Read(ctx)
		if ctx.Err() != nil {
			d.drain(rd)
			d.flushSuppressed()
			return
		}
		if errors.Is(err, dataplane.ErrClosed) {
			return
		}
		if err != nil {
			d.metrics.EventDecodeFailed()
			d.log.Warn("unreadable event", "err", err)
			continue
		}
		d.report(ev)
	}
}

func (d *daemon) drain(rd *dataplane.EventReader) {
	for {
		ev, err := rd.Poll()
		switch {
		case errors.Is(err, dataplane.ErrClosed):
			return
		case err != nil:
			d.metrics.EventDecodeFailed()
		case ev == nil:
			return
		default:
			d.report(ev)
		}
	}
}

func (d *daemon) report(ev dataplane.Event) {
	switch ev := ev.(type) {
	case *dataplane.Connection:
		if d.conns.allow(ev.Time) {
			d.publish(&report.Connection{Time: ev.Time, Iface: d.links.ifname(ev.Ifindex), Src: ev.Src, Dst: ev.Dst})
		}
	case *dataplane.Scan:
		tried := make([]ports.Port, len(ev.Ports))
		for i, p := range ev.Ports {
			tried[i] = p.Port
		}
		sc := &report.Scan{Time: ev.Time, Iface: d.links.ifname(ev.Ifindex), Src: ev.Src, Dst: ev.Dst,
			Ports: tried, Allowlisted: ev.Allowlisted, WouldBlock: ev.WouldBlock, ReportOnly: ev.ReportOnly,
			RateLimited: ev.RateLimited}
		if ev.Source.Bits() < ev.Src.BitLen() {
			sc.Prefix = ev.Source
		}
		d.publish(sc)
		if ev.Blocked {
			expires, reason := d.state.OnScan(ev)
			var duration time.Duration
			if !expires.IsZero() {
				duration = expires.Sub(ev.Time).Round(time.Second)
			}
			d.publish(&report.Block{Time: ev.Time, Prefix: ev.Source,
				Reason: reason, Duration: duration, Expires: expires})
		}
		if ev.RateLimited {
			d.log.Warn("scanner not blocked: the minute's budget of scan blocks is spent (--scan-blocks-per-minute); its attempts are still dropped for the window",
				"src", ev.Source)
		}
		if ev.BlockFailed {
			d.log.Error("scanner not blocked: the block map is full; its new ports are still dropped for the window",
				"src", ev.Src)
		}
	}
}

// flushSuppressed writes how many connection lines the limit held back.
func (d *daemon) flushSuppressed() {
	if n := d.conns.takeSuppressed(); n > 0 {
		d.publish(&report.Suppressed{Time: time.Now(), Count: n})
	}
}
