package decision

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/store"
)

// The blocks the kernel makes itself, for scans and connection limits:
// the engine records them, with their evidence, and escalates repeat
// offenders.

// SetEscalation sets the escalation schedule and the first offence's
// duration (at start and reload).
func (e *Engine) SetEscalation(esc policy.Escalation, first time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.esc, e.blockDuration = esc, first
}

// escalate counts the scan block of src made at created, and returns its
// expiry per the schedule and which offence it is. The kernel made it with
// the first offence's duration: a later offence lengthens it there.
func (e *Engine) escalate(p netip.Prefix, created, expires time.Time) (time.Time, int) {
	offence, err := e.st.Strike(p.Addr(), created, e.esc.Forget)
	if err != nil {
		e.log.Warn("cannot count a strike; the block keeps its first duration", "src", p, "err", err)
		return expires, 1
	}
	if offence <= 1 || expires.IsZero() {
		return expires, offence
	}
	longer := Expiry(created, e.esc.Duration(offence, e.blockDuration))
	if sameTime(longer, expires) {
		return expires, offence
	}
	if err := e.k.Extend(p, longer); err != nil {
		e.log.Warn("cannot lengthen a repeat scanner's block", "src", p, "offence", offence, "err", err)
		return expires, offence
	}
	return longer, offence
}

func scanReason(offence int) string {
	if offence <= 1 {
		return "port scan"
	}
	return fmt.Sprintf("port scan (offence %d)", offence)
}

// LimitReason is the reason of a block for a connection limit of port.
func LimitReason(port ports.Port, offence int) string {
	r := fmt.Sprintf("connection limit %d/%s", port.Num, port.Proto)
	if offence > 1 {
		r += fmt.Sprintf(" (offence %d)", offence)
	}
	return r
}

// OnLimit records a block the kernel made for a source over a connection
// limit, escalated when the limit asks for it, and returns the block's
// expiry and reason.
func (e *Engine) OnLimit(ev *dataplane.LimitExceeded, escalate bool) (time.Time, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := ev.Source
	expires, offence := ev.Expires, 1
	if escalate {
		expires, offence = e.escalate(p, ev.Time, ev.Expires)
	}
	b := store.Block{Prefix: p, Origin: store.OriginLimit, Reason: LimitReason(ev.Port, offence), By: "kernel",
		Created: ev.Time, Expires: expires,
		Ports: []store.PortSeen{{Port: ev.Port.Num, Proto: ev.Port.Proto, Seen: ev.Time}}}
	e.record(b, ev.Src.Addr())
	return expires, b.Reason
}

// record keeps a block the kernel made (for src) in the store and the
// history.
func (e *Engine) record(b store.Block, src netip.Addr) {
	if err := e.st.PutBlocks(b); err != nil {
		e.log.Error("cannot record a kernel block; the kernel holds it and the next reconciliation retries",
			"src", src, "origin", b.Origin, "err", err)
		return
	}
	e.cacheBlock(b)
	e.history(store.Change{Time: b.Created, Action: "block", Prefix: b.Prefix, Origin: b.Origin, Reason: b.Reason, By: "kernel"})
	e.changed()
}

// OnScan records a block the kernel made for a scan, with its evidence and
// its escalation, and returns the block's expiry and reason.
func (e *Engine) OnScan(ev *dataplane.Scan) (time.Time, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := ev.Source
	expires, offence := e.escalate(p, ev.Time, ev.Expires)
	b := store.Block{Prefix: p, Origin: store.OriginScan, Reason: scanReason(offence), By: "kernel",
		Created: ev.Time, Expires: expires}
	for _, t := range ev.Ports {
		b.Ports = append(b.Ports, store.PortSeen{Port: t.Port.Num, Proto: t.Port.Proto, Seen: t.Seen})
	}
	e.record(b, ev.Src)
	return expires, b.Reason
}
