package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/hbf-firewall/hbf/internal/limit"
	"github.com/hbf-firewall/hbf/internal/ports"
)

// MaxLimitCount is the largest count a connection limit may have: the
// program keeps the times of a source's last MaxLimitCount connections to
// a port.
const MaxLimitCount = int(hbfLimitLayoutLIMIT_MAX_COUNT)

// MaxLimits is how many ports may have a limit: the limits map's size.
const MaxLimits = 1024

// LimitStats is what one limit did, since its maps were made (they
// survive restarts).
type LimitStats struct {
	Counted  uint64 // connections (UDP: datagrams) counted
	Exceeded uint64 // connections over the limit
	Blocked  uint64 // sources it blocked
	Dropped  uint64 // SYNs and datagrams it dropped (:drop)
}

func limitKey(p ports.Port) uint32 {
	if p.Proto == ports.UDP {
		return uint32(p.Num) | uint32(hbfPortProtoPORT_UDP)
	}
	return uint32(p.Num)
}

// SetLimits makes ls the program's connection limits, and starts the
// connection tracer while a TCP port has one (stops it while none does:
// it costs every TCP state change of the host a call). A limit whose
// count or window changed starts its sources' logs afresh; what each
// limit did so far is kept while the port has a limit.
func (d *Dataplane) SetLimits(ls []limit.Limit) error {
	if err := (Settings{Limits: ls}).validateLimits(); err != nil {
		return err
	}
	d.limitMu.Lock()
	defer d.limitMu.Unlock()
	if d.limitSlots == nil {
		// The limits an earlier process left in the pinned maps.
		d.limitSlots = map[uint32]uint32{}
		err := eachBatch(d.objs.Limits, func(k *uint32, r *hbfLimitRule) error {
			if r.Count != 0 {
				d.limitSlots[*k] = r.Slot
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read the connection limits: %w", err)
		}
	}
	slots := make(map[uint32]uint32, len(ls))
	taken := make(map[uint32]bool, len(ls))
	for _, l := range ls {
		if slot, ok := d.limitSlots[limitKey(l.Port)]; ok {
			slots[limitKey(l.Port)], taken[slot] = slot, true
		}
	}
	var tcp, udp [65536 / 64]uint64
	var fresh []uint32
	next := uint32(0)
	for _, l := range ls {
		k := limitKey(l.Port)
		rule := hbfLimitRule{Count: uint32(l.Count), WindowMs: uint32(l.Window.Milliseconds())}
		if l.Action == limit.Drop {
			rule.Flags = uint32(hbfLimitFlagsLIMIT_DROP)
		}
		slot, kept := slots[k]
		if !kept {
			for taken[next] {
				next++
			}
			slot, taken[next] = next, true
			slots[k] = slot
			// A new limit starts from nothing, whatever a removed one left.
			if err := d.objs.LimitCounters.Update(slot, make([]hbfLimitStats, d.possibleCPUs), ebpf.UpdateAny); err != nil {
				return fmt.Errorf("clear the counters of connection limit %s: %w", l, err)
			}
		}
		rule.Slot = slot
		var old hbfLimitRule
		if err := d.objs.Limits.Lookup(k, &old); err != nil {
			return fmt.Errorf("read connection limit %s: %w", l, err)
		}
		if old.Count != 0 && (old.Count != rule.Count || old.WindowMs != rule.WindowMs) {
			fresh = append(fresh, k)
		}
		if old != rule {
			if err := d.objs.Limits.Update(k, rule, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("write connection limit %s: %w", l, err)
			}
		}
		set := &tcp
		if l.Port.Proto == ports.UDP {
			set = &udp
		}
		set[l.Port.Num/64] |= 1 << (l.Port.Num % 64)
	}
	if err := d.forgetLogs(fresh); err != nil {
		return err
	}
	// The bits after the limits they guard, and before the limits that
	// lose theirs are removed.
	if err := d.objs.HbfLimitedTcp.Set(tcp); err != nil {
		return fmt.Errorf("write the ports with a TCP limit: %w", err)
	}
	if err := d.objs.HbfLimitedUdp.Set(udp); err != nil {
		return fmt.Errorf("write the ports with a UDP limit: %w", err)
	}
	var stale []uint32
	for k := range d.limitSlots {
		if _, ok := slots[k]; !ok {
			if err := d.objs.Limits.Update(k, hbfLimitRule{}, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("remove the connection limit of %s: %w", portOf(k), err)
			}
			stale = append(stale, k)
		}
	}
	if err := d.forgetLogs(stale); err != nil {
		return err
	}
	d.limitSlots = slots
	hasTCP := false
	for _, l := range ls {
		hasTCP = hasTCP || l.Port.Proto == ports.TCP
	}
	if hasTCP {
		return d.startTracer()
	}
	return d.stopTracer()
}

// forgetLogs removes the sources' logs of the ports keys.
func (d *Dataplane) forgetLogs(keys []uint32) error {
	if len(keys) == 0 {
		return nil
	}
	drop := make(map[uint32]bool, len(keys))
	for _, k := range keys {
		drop[k] = true
	}
	var stale []hbfLimitKey
	err := eachBatch(d.objs.ConnLogs, func(k *hbfLimitKey, _ *hbfConnLog) error {
		if drop[k.Port] {
			stale = append(stale, *k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk the connection logs: %w", err)
	}
	for _, k := range stale {
		if err := d.objs.ConnLogs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove a connection log: %w", err)
		}
	}
	var slots []uint32
	err = eachBatch(d.objs.DatagramLogs, func(i *uint32, log *hbfDatagramLog) error {
		if log.Filled != 0 && drop[log.Key.Port] {
			slots = append(slots, *i)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk the datagram logs: %w", err)
	}
	for _, i := range slots {
		if err := d.objs.DatagramLogs.Update(i, hbfDatagramLog{}, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("clear a datagram log: %w", err)
		}
	}
	return nil
}

// LimitStats reads what each limit did, by port.
func (d *Dataplane) LimitStats() (map[ports.Port]LimitStats, error) {
	d.limitMu.Lock()
	defer d.limitMu.Unlock()
	out := make(map[ports.Port]LimitStats, len(d.limitSlots))
	var perCPU []hbfLimitStats
	for k, slot := range d.limitSlots {
		if err := d.objs.LimitCounters.Lookup(slot, &perCPU); err != nil {
			return nil, fmt.Errorf("read the counters of connection limit %s: %w", portOf(k), err)
		}
		var st LimitStats
		for _, c := range perCPU {
			st.Counted += c.Counted
			st.Exceeded += c.Exceeded
			st.Blocked += c.Blocked
			st.Dropped += c.Dropped
		}
		out[portOf(k)] = st
	}
	return out, nil
}

func (d *Dataplane) tracerPin() string {
	if d.pinDir == "" {
		return ""
	}
	return filepath.Join(d.pinDir, "tracer")
}

// startTracer attaches the connection tracer, this program's, pinned so
// that limits hold while no daemon runs. An earlier process's tracer is
// detached first: both would log each connection twice. Connections that
// complete in between are not counted.
func (d *Dataplane) startTracer() error {
	if d.tracer != nil {
		return nil
	}
	if err := d.stopTracer(); err != nil {
		return err
	}
	prog, err := d.loadTracer()
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "inet_sock_set_state", Program: prog})
	if err != nil {
		return fmt.Errorf("attach the connection tracer to the inet_sock_set_state raw tracepoint: %w", err)
	}
	if pin := d.tracerPin(); pin != "" {
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("pin the connection tracer: %w", err)
		}
	}
	d.tracer = l
	return nil
}

// stopTracer detaches the connection tracer, this process's or one an
// earlier process pinned.
func (d *Dataplane) stopTracer() error {
	if d.tracer != nil {
		err := d.tracer.Unpin()
		d.tracer.Close()
		d.tracer = nil
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unpin the connection tracer: %w", err)
		}
		return nil
	}
	pin := d.tracerPin()
	if pin == "" {
		return nil
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("detach the connection tracer pinned at %s: %w", pin, err)
	}
	return nil
}

// loadTracer loads the connection tracer on this program's maps and
// variables.
func (d *Dataplane) loadTracer() (*ebpf.Program, error) {
	spec := d.objs.spec.Copy()
	tracer := d.objs.tracerSpec
	if tracer == nil {
		return nil, errors.New("the connection tracer is not in this build of the program")
	}
	spec.Programs = map[string]*ebpf.ProgramSpec{hbfProgHbfConnTracer: tracer}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: d.objs.maps})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load the connection tracer: the kernel's verifier refused it: %+v", ve)
		}
		return nil, fmt.Errorf("load the connection tracer: %w", err)
	}
	defer coll.Close()
	return coll.DetachProgram(hbfProgHbfConnTracer), nil
}

// windowOf is a limit event's window.
func windowOf(ms uint32) time.Duration { return time.Duration(ms) * time.Millisecond }
