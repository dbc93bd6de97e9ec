package daemon

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/limit"
	"github.com/hbf-firewall/hbf/internal/metrics"
	"github.com/hbf-firewall/hbf/internal/natports"
	"github.com/hbf-firewall/hbf/internal/ports"
)

// Status is what hbf status shows: version, settings in force, interfaces,
// lists, counters and entries.
func (s *service) Status(context.Context) (api.Status, error) {
	d := s.d
	k, err := d.k.Counters()
	if err != nil {
		return api.Status{}, err
	}
	set := d.currentProgram()
	live := d.settings()
	st := api.Status{
		Version: d.deps.Version,
		PID:     os.Getpid(),
		Started: d.started,
		Uptime:  time.Since(d.started).Round(time.Second).String(),
		Settings: map[string]string{
			"mode":               ModeName(set.Monitor),
			"max_ports":          strconv.Itoa(set.MaxPorts),
			"window":             set.Window.String(),
			"block_duration":     set.BlockDuration.String(),
			"log_connections":    d.conns.String(),
			"ignore_ports":       portsText(set.IgnorePorts),
			"udp_scans":          string(set.UDPScans),
			"count_ports":        CountPortsName(set.CountClosed),
			"served_ports":       servedText(d.servedPorts()),
			"max_blocks":         strconv.Itoa(d.k.Capacity().Blocks),
			"max_block_prefixes": strconv.Itoa(d.k.Capacity().BlockPrefixes),
			"pin_path":           d.start.PinPath,
			"state_dir":          d.start.StateDir,
			"detach_on_exit":     strconv.FormatBool(d.start.DetachOnExit),
			"config":             live.ConfigFile,

			"scan_blocks_per_minute": strconv.Itoa(set.MaxBlocksPerMinute),
			"scan_prefix_v6":         "/" + strconv.Itoa(set.IPv6ScanPrefix),
		},
		Counters: map[string]uint64{},
		Entries:  d.state.Counts(),
	}
	for _, c := range dataplane.CounterTable() {
		if c.Status != "" {
			st.Counters[c.Status] = c.Value(&k)
		}
	}
	st.Interfaces = d.links.interfaces()
	for kind, n := range d.links.repairCounts() {
		st.Counters["repairs_"+kind] = n
	}
	d.mu.Lock()
	st.Store = d.storeStatus
	d.mu.Unlock()
	st.Counters["undo_failures"] = d.state.UndoFailures()
	_, unenforced := d.state.Protected()
	st.Counters["protected_unenforced"] = 0
	for _, n := range unenforced {
		st.Counters["protected_unenforced"] += uint64(n)
	}
	if d.fleet != nil {
		f := d.fleetStats()
		st.Settings["fleet"] = d.start.Fleet.Node + " in " + strings.Join(d.start.Fleet.Etcd, ",")
		st.Counters["fleet_connected"] = map[bool]uint64{false: 0, true: 1}[f.Connected]
		st.Counters["fleet_members"] = uint64(f.Members)
		st.Counters["fleet_entries"] = uint64(f.Entries)
		st.Counters["fleet_published"] = f.Published
	}
	if d.crowdsec != nil {
		st.CrowdSec = d.crowdsec.status()
	}
	if st.Limits, err = d.limitStatus(set.Limits); err != nil {
		return api.Status{}, err
	}
	for _, l := range d.state.Lists() {
		status := "ok"
		if l.Degraded != "" {
			status = l.Degraded
		}
		st.Lists = append(st.Lists, api.ListStatus{Source: l.Spec.Where, Entries: l.List.Len(), Loaded: l.Loaded, Status: status})
	}
	return st, nil
}

func portsText(l ports.List) string {
	if len(l) == 0 {
		return "-"
	}
	return l.String()
}

// servedText is the ports the host serves through NAT and IPVS, as
// status shows them.
func servedText(s natports.Snapshot) string {
	text := "-"
	if len(s.Ports) > 0 {
		text = ports.Compact(s.Ports)
	}
	if s.Unread != "" {
		text += " (" + unreadAdvice(s) + ")"
	}
	return text
}

// limitStatus is each limit with what it did.
func (d *daemon) limitStatus(ls []limit.Limit) ([]api.LimitStatus, error) {
	if len(ls) == 0 {
		return nil, nil
	}
	stats, err := d.k.LimitStats()
	if err != nil {
		return nil, err
	}
	out := make([]api.LimitStatus, 0, len(ls))
	for _, l := range ls {
		st := stats[l.Port]
		out = append(out, api.LimitStatus{Limit: l.String(), Port: l.Port.Num, Proto: l.Port.Proto.String(),
			Count: l.Count, Window: limit.WindowString(l.Window), Action: l.Action.String(),
			Counted: st.Counted, Exceeded: st.Exceeded, Blocked: st.Blocked, Dropped: st.Dropped})
	}
	return out, nil
}

// limitMetrics is each limit with what it did, for /metrics: what hbf
// status shows of it.
func (d *daemon) limitMetrics() ([]metrics.LimitStats, error) {
	ls, err := d.limitStatus(d.currentProgram().Limits)
	out := make([]metrics.LimitStats, len(ls))
	for i, l := range ls {
		out[i] = metrics.LimitStats{Port: l.Port, Proto: l.Proto, LimitStats: dataplane.LimitStats{
			Counted: l.Counted, Exceeded: l.Exceeded, Blocked: l.Blocked, Dropped: l.Dropped}}
	}
	return out, err
}
