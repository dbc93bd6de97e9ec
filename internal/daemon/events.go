package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/limit"
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
	case *dataplane.LimitExceeded:
		d.reportLimit(ev)
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
			d.publishBlock(ev.Time, ev.Source, expires, reason)
			if d.crowdsec.pushes("scans") {
				d.crowdsec.enqueue(blockAlert(scenarioScan, fmt.Sprintf("%s scanned %d ports of %s: %s", ev.Src, len(tried), ev.Dst,
					ports.Join(tried)), ev.Source, oldestTry(ev), ev.Time, durationTo(ev.Time, expires), len(tried), d.settings().Window, tried))
			}
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

// reportLimit reports a source over a connection limit, and records the
// block the kernel made for it.
func (d *daemon) reportLimit(ev *dataplane.LimitExceeded) {
	l := &report.Limit{Time: ev.Time, Src: ev.Src.Addr(), Dst: ev.Dst, Port: ev.Port, Count: ev.Count,
		Window: ev.Window, Allowlisted: ev.Allowlisted, WouldBlock: ev.WouldBlock, RateLimited: ev.RateLimited,
		Throttled: ev.Throttled}
	if ev.Source.Bits() < ev.Src.Addr().BitLen() {
		l.Prefix = ev.Source
	}
	d.publish(l)
	if ev.Blocked {
		expires, reason := d.state.OnLimit(ev, d.limitOf(ev.Port).Action == limit.Escalate)
		d.publishBlock(ev.Time, ev.Source, expires, reason)
		if d.crowdsec.pushes("limits") {
			d.crowdsec.enqueue(blockAlert(scenarioLimit, fmt.Sprintf("%s made %d connections to port %d/%s in %s, over its limit",
				ev.Src.Addr(), ev.Count+1, ev.Port.Num, ev.Port.Proto, limit.WindowString(ev.Window)), ev.Source,
				ev.Time.Add(-ev.Window), ev.Time, durationTo(ev.Time, expires), ev.Count+1, ev.Window, []ports.Port{ev.Port}))
		}
	}
	if ev.RateLimited {
		d.log.Warn("source over a connection limit not blocked: the minute's budget of kernel blocks is spent (--scan-blocks-per-minute)",
			"src", ev.Source, "port", ev.Port)
	}
	if ev.BlockFailed {
		d.log.Error("source over a connection limit not blocked: the block map is full", "src", ev.Source, "port", ev.Port)
	}
}

// limitOf is the live limit of port; the zero Limit when it has none.
func (d *daemon) limitOf(port ports.Port) limit.Limit {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.live.Limits {
		if l.Port == port {
			return l
		}
	}
	return limit.Limit{}
}

// durationTo is how long a block made at at lasts until expires; 0 for
// good.
func durationTo(at, expires time.Time) time.Duration {
	if expires.IsZero() {
		return 0
	}
	return expires.Sub(at).Round(time.Second)
}

// oldestTry is when a scan's first port of its window was tried.
func oldestTry(ev *dataplane.Scan) time.Time {
	oldest := ev.Time
	for _, p := range ev.Ports {
		if p.Seen.Before(oldest) {
			oldest = p.Seen
		}
	}
	return oldest
}

// publishBlock reports a block the kernel made, as the engine recorded it.
func (d *daemon) publishBlock(at time.Time, p netip.Prefix, expires time.Time, reason string) {
	d.publish(&report.Block{Time: at, Prefix: p, Reason: reason, Duration: durationTo(at, expires), Expires: expires})
}

// flushSuppressed writes how many connection lines the limit held back.
func (d *daemon) flushSuppressed() {
	if n := d.conns.takeSuppressed(); n > 0 {
		d.publish(&report.Suppressed{Time: time.Now(), Count: n})
	}
}
