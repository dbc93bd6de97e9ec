package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/hbf-firewall/hbf/internal/crowdsec"
	"github.com/hbf-firewall/hbf/internal/fleet"
	"github.com/hbf-firewall/hbf/internal/ports"
)

// The blocks hbf makes, pushed to LAPI as alerts of a machine's: every
// bouncer of that LAPI then enforces them.

const (
	// maxQueuedAlerts bounds what waits for LAPI; past it the oldest go,
	// counted: a LAPI down for long must not grow the daemon.
	maxQueuedAlerts = 10000
	// alertBatch is what one request carries at most.
	alertBatch = 100
)

// The scenarios of hbf's alerts.
const (
	scenarioLimit = "hbf/connection-limit"
	scenarioScan  = "hbf/port-scan"
)

// openWatcher readies the pushing of alerts, when a machine is named.
func (l *crowdsecLink) openWatcher() error {
	if l.cfg.MachineID == "" {
		return nil
	}
	password, err := fleet.ReadSecret(l.cfg.PasswordFile)
	if err != nil {
		return fmt.Errorf("--crowdsec-password-file: %w", err)
	}
	l.watcher = crowdsec.NewWatcher(l.client, l.cfg.MachineID, password, []string{scenarioLimit, scenarioScan})
	l.wake = make(chan struct{}, 1)
	return nil
}

// pushes reports whether blocks of class (limits, scans) go to LAPI.
func (l *crowdsecLink) pushes(class string) bool {
	return l != nil && l.watcher != nil && slices.Contains(l.cfg.Push, class)
}

// enqueue adds an alert for the pusher; it never waits.
func (l *crowdsecLink) enqueue(a crowdsec.Alert) {
	l.mu.Lock()
	if len(l.queue) >= maxQueuedAlerts {
		l.queue = l.queue[1:]
		l.alertsDropped++
	}
	l.queue = append(l.queue, a)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// pushAlerts sends the queued alerts until ctx ends, a batch at a time; a
// failed batch stays queued and is tried again, later each time.
func (l *crowdsecLink) pushAlerts(ctx context.Context) {
	wait := time.Duration(0)
	for {
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		} else {
			select {
			case <-ctx.Done():
				return
			case <-l.wake:
			}
		}
		for {
			l.mu.Lock()
			batch := slices.Clone(l.queue[:min(len(l.queue), alertBatch)])
			droppedBefore := l.alertsDropped
			l.mu.Unlock()
			if len(batch) == 0 {
				wait = 0
				break
			}
			if _, err := l.watcher.Push(ctx, batch); err != nil {
				if ctx.Err() != nil {
					return
				}
				l.mu.Lock()
				if l.pushErr == "" {
					l.d.log.Warn("cannot push alerts to CrowdSec; they wait and are tried again", "queued", len(l.queue), "err", err)
				}
				l.pushErr = err.Error()
				l.mu.Unlock()
				wait = min(max(2*wait, time.Second), maxCrowdSecBackoff)
				break
			}
			l.mu.Lock()
			// What enqueue dropped meanwhile went from the front: from
			// this batch first.
			left := len(batch) - min(int(l.alertsDropped-droppedBefore), len(batch))
			l.queue = l.queue[left:]
			l.alertsPushed += uint64(len(batch))
			l.pushErr = ""
			l.mu.Unlock()
		}
	}
}

// blockAlert is the alert of a block hbf made of source for scenario,
// from start to at, lasting duration (0: for good, which LAPI cannot
// say: a year), with the ports as its events' facts.
func blockAlert(scenario, message string, source netip.Prefix, start, at time.Time, duration time.Duration,
	count int, window time.Duration, tried []ports.Port) crowdsec.Alert {
	scope, value := "Ip", source.Addr().String()
	src := crowdsec.AlertSource{Scope: scope, Value: value, IP: value}
	if !source.IsSingleIP() {
		scope, value = "Range", source.String()
		src = crowdsec.AlertSource{Scope: scope, Value: value, Range: value}
	}
	if duration <= 0 {
		duration = 365 * 24 * time.Hour
	}
	stamp := at.UTC().Format(time.RFC3339)
	var events []crowdsec.AlertEvent
	for _, p := range tried {
		events = append(events, crowdsec.AlertEvent{Timestamp: stamp, Meta: []crowdsec.AlertMeta{
			{Key: "source_ip", Value: source.Addr().String()}, {Key: "port", Value: strconv.Itoa(int(p.Num))},
			{Key: "proto", Value: p.Proto.String()}}})
	}
	return crowdsec.Alert{Scenario: scenario, ScenarioHash: "", ScenarioVersion: "1", Message: message,
		EventsCount: int32(count), Capacity: int32(count), Leakspeed: window.String(), StartAt: start.UTC().Format(time.RFC3339),
		StopAt: stamp, Source: src, Events: events,
		// Origin crowdsec, as LAPI's own detections: cscli lists those
		// without --all. The scenario tells hbf's apart.
		Decisions: []crowdsec.AlertBanning{{Duration: crowdsec.Seconds(duration), Origin: "crowdsec", Scenario: scenario,
			Scope: scope, Type: "ban", Value: value}}}
}
