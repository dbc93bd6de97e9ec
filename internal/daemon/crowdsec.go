package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/crowdsec"
	"github.com/hbf-firewall/hbf/internal/decision"
	"github.com/hbf-firewall/hbf/internal/fleet"
	"github.com/hbf-firewall/hbf/internal/metrics"
	"github.com/hbf-firewall/hbf/internal/policy"
)

// pushClasses are what --crowdsec-push may name: blocks for connection
// limits, counted on completed handshakes a forger cannot make, and scan
// blocks, made of SYNs anyone can forge.
var pushClasses = []string{"limits", "scans"}

// validate names what cannot work in the CrowdSec settings.
func (c CrowdSec) validate() error {
	var errs []error
	if !c.Enabled() {
		if c.MachineID != "" || c.KeyFile != "" {
			errs = append(errs, errors.New("--crowdsec-key-file and --crowdsec-machine-id need --crowdsec-lapi: name the LAPI"))
		}
		return errors.Join(errs...)
	}
	if !strings.HasPrefix(c.LAPI, "http://") && !strings.HasPrefix(c.LAPI, "https://") {
		errs = append(errs, fmt.Errorf("--crowdsec-lapi %q: must be an http:// or https:// URL, as http://127.0.0.1:8080", c.LAPI))
	}
	if c.KeyFile == "" && c.Cert == "" {
		errs = append(errs, errors.New("--crowdsec-lapi needs --crowdsec-key-file, a file holding the key cscli bouncers add NAME -o raw prints, "+
			"or a client certificate LAPI takes for bouncers (--crowdsec-cert and --crowdsec-key)"))
	}
	if (c.Cert == "") != (c.Key == "") {
		errs = append(errs, errors.New("--crowdsec-cert and --crowdsec-key go together: name both or neither"))
	}
	if (c.MachineID == "") != (c.PasswordFile == "") {
		errs = append(errs, errors.New("--crowdsec-machine-id and --crowdsec-password-file go together: name both or neither"))
	}
	if c.Interval < time.Second {
		errs = append(errs, fmt.Errorf("--crowdsec-interval %s: must be at least 1s", c.Interval))
	}
	if c.Resync < c.Interval {
		errs = append(errs, fmt.Errorf("--crowdsec-resync %s: must be at least --crowdsec-interval (%s)", c.Resync, c.Interval))
	}
	if c.MinPrefixV4 < 1 || c.MinPrefixV4 > 32 {
		errs = append(errs, fmt.Errorf("--crowdsec-min-prefix-v4 %d: must be between 1 and 32", c.MinPrefixV4))
	}
	if c.MinPrefixV6 < 1 || c.MinPrefixV6 > 128 {
		errs = append(errs, fmt.Errorf("--crowdsec-min-prefix-v6 %d: must be between 1 and 128", c.MinPrefixV6))
	}
	if c.MaxPerOrigin < 0 {
		errs = append(errs, fmt.Errorf("--crowdsec-max-per-origin %d: must not be negative (0: no cap)", c.MaxPerOrigin))
	}
	for _, p := range c.Push {
		if !slices.Contains(pushClasses, p) && p != "none" {
			errs = append(errs, fmt.Errorf("--crowdsec-push %q: name limits, scans (comma-separated), or none", p))
		}
	}
	return errors.Join(errs...)
}

// crowdsecLink reads a LAPI's decisions and makes the blocks they hold.
type crowdsecLink struct {
	d       *daemon
	cfg     CrowdSec
	client  *crowdsec.Client
	tracker *crowdsec.Tracker

	mu        sync.Mutex
	connected bool
	why       string        // the last failure, while not connected
	lastPull  time.Time     // the last read that was applied
	pullTook  time.Duration // from its request to its blocks in the kernel
	applyTook time.Duration // of which from LAPI's answer read
	lastWhole time.Time     // the last snapshot applied
	held      map[string]int
	skipped   map[crowdsec.Skip]uint64
	refused   map[crowdsec.Refusal]uint64
	failures  uint64

	// The alerts of hbf's blocks waiting for LAPI (crowdsecpush.go); no
	// watcher without a machine.
	watcher       *crowdsec.Watcher
	wake          chan struct{}
	queue         []crowdsec.Alert
	alertsPushed  uint64
	alertsDropped uint64
	pushErr       string
}

// maxCrowdSecBackoff bounds the wait between two failed reads.
const maxCrowdSecBackoff = time.Minute

// openCrowdSec readies the CrowdSec link, when there is one: it reads
// LAPI only once serve runs, so that a LAPI out of reach delays nothing,
// and the decisions the store holds are in force meanwhile.
func (d *daemon) openCrowdSec() error {
	cs := d.start.CrowdSec
	if !cs.Enabled() {
		return nil
	}
	// Without a key, LAPI knows the bouncer by its client certificate.
	var key string
	if cs.KeyFile != "" {
		var err error
		if key, err = fleet.ReadSecret(cs.KeyFile); err != nil {
			return fmt.Errorf("--crowdsec-key-file: %w", err)
		}
		if key == "" {
			return fmt.Errorf("--crowdsec-key-file %s is empty: put the key cscli bouncers add NAME -o raw prints in it", cs.KeyFile)
		}
	}
	tlsCfg, err := fleet.TLS([]string{cs.LAPI}, cs.CA, cs.Cert, cs.Key)
	if err != nil {
		return fmt.Errorf("--crowdsec-ca/--crowdsec-cert/--crowdsec-key: %w", err)
	}
	client, err := crowdsec.New(crowdsec.Config{URL: cs.LAPI, APIKey: key, TLS: tlsCfg,
		Origins: cs.Origins, ScenariosContaining: cs.ScenariosContaining, ScenariosNotContaining: cs.ScenariosNotContaining,
		UserAgent: "hbf/" + d.deps.Version})
	if err != nil {
		return fmt.Errorf("--crowdsec-lapi: %w", err)
	}
	l := &crowdsecLink{d: d, cfg: cs, client: client, skipped: map[crowdsec.Skip]uint64{},
		refused: map[crowdsec.Refusal]uint64{}}
	l.tracker = &crowdsec.Tracker{MaxPerOrigin: cs.MaxPerOrigin, Now: time.Now}
	if err := l.openWatcher(); err != nil {
		return err
	}
	d.crowdsec = l
	return nil
}

// run reads the stream every interval until ctx ends: a snapshot first,
// and again every resync and after a failure (an answer lost on the way
// loses its changes for good), the changes since the last read between.
func (l *crowdsecLink) run(ctx context.Context) {
	wait := time.Duration(0)
	whole := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		err := l.pull(ctx, whole)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			l.failed(err)
			whole = true
			wait = min(max(2*wait, l.cfg.Interval), maxCrowdSecBackoff)
			continue
		}
		l.mu.Lock()
		whole = time.Since(l.lastWhole) >= l.cfg.Resync
		l.mu.Unlock()
		wait = l.cfg.Interval
	}
}

// pull reads the stream once and applies it.
func (l *crowdsecLink) pull(ctx context.Context, whole bool) error {
	start := time.Now()
	ch, err := l.client.Stream(ctx, whole)
	if err != nil {
		return err
	}
	answered := time.Now()
	// The host's policy as it is now (what is protected follows the
	// host): nothing protected, nothing wider than the CrowdSec minimum
	// prefixes.
	l.tracker.Check = l.d.state.Checker(policy.Rules{MinBitsV4: l.cfg.MinPrefixV4, MinBitsV6: l.cfg.MinPrefixV6},
		l.d.protectedBase(l.d.settings(), l.d.hostSnapshot()))
	out := l.tracker.Apply(ch, whole)
	if whole {
		// A snapshot is sized as a list source: with the lists, it fits in
		// the kernel whole, or what is in force stays and the refusal says
		// why.
		held := make([]netip.Prefix, len(out.Put))
		for i, b := range out.Put {
			held[i] = b.Prefix
		}
		if ferr := decision.ListsFit(l.d.state.Lists(), l.d.k.Capacity(), held...); ferr != nil {
			return fmt.Errorf("CrowdSec's %d decisions with the lists: %w", len(out.Put), explain(ferr))
		}
	}
	tracked := time.Now()
	applied, err := l.d.state.ApplyCrowdSec(out.Put, out.Remove, out.Whole)
	now := time.Now()
	enforced := applied.Enforced
	if enforced.IsZero() {
		enforced = now
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.connected {
		l.d.log.Info("reading CrowdSec's decisions", "lapi", l.cfg.LAPI)
	}
	l.connected, l.why, l.lastPull, l.pullTook, l.applyTook = true, "", now, enforced.Sub(start), enforced.Sub(answered)
	if whole {
		l.lastWhole = now
	}
	l.held = l.tracker.Held()
	for s, n := range out.Skipped {
		l.skipped[s] += uint64(n)
	}
	for r, n := range out.Refused {
		l.refused[r] += uint64(n)
	}
	if applied.Added+applied.Removed > 0 {
		// Where a read's time went, for an operator who finds it slow.
		l.d.log.Info("CrowdSec's decisions applied", "added", applied.Added, "removed", applied.Removed, "snapshot", whole,
			"read", answered.Sub(start), "checked", tracked.Sub(answered), "enforced", enforced.Sub(tracked), "stored", now.Sub(enforced))
	}
	return err
}

// failed notes a read that failed: enforcement stays as it was.
func (l *crowdsecLink) failed(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures++
	if l.connected || l.why == "" {
		l.d.log.Warn("cannot read CrowdSec's decisions; those in force stay until they expire, and hbf retries", "lapi", l.cfg.LAPI, "err", err)
	}
	l.connected, l.why = false, err.Error()
}

// status is the link as hbf status shows it.
func (l *crowdsecLink) status() *api.CrowdSecStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &api.CrowdSecStatus{LAPI: l.cfg.LAPI, Connected: l.connected, Why: l.why, LastPull: l.lastPull,
		LastPullTook: l.pullTook.String(), LastApplyTook: l.applyTook.String(),
		LastSnapshot: l.lastWhole, Decisions: maps.Clone(l.held), Skipped: map[string]uint64{}, Refused: map[string]uint64{},
		Failures: l.failures, AlertsPushed: l.alertsPushed, AlertsQueued: len(l.queue), AlertsDropped: l.alertsDropped,
		PushError: l.pushErr}
	if st.Decisions == nil {
		st.Decisions = map[string]int{}
	}
	for s, n := range l.skipped {
		st.Skipped[string(s)] = n
	}
	for r, n := range l.refused {
		st.Refused[string(r)] = n
	}
	return st
}

// crowdsecStats are the CrowdSec link as /metrics shows it, once it is
// open: what hbf status shows, with every reason of the skipped and
// refused counters from the start.
func (d *daemon) crowdsecStats() metrics.CrowdSecStats {
	if d.crowdsec == nil {
		return metrics.CrowdSecStats{}
	}
	st := d.crowdsec.status()
	for _, s := range crowdsec.Skips {
		st.Skipped[string(s)] += 0
	}
	for _, r := range crowdsec.Refusals {
		st.Refused[string(r)] += 0
	}
	return metrics.CrowdSecStats{Connected: st.Connected, LastPull: st.LastPull, Decisions: st.Decisions,
		Skipped: st.Skipped, Refused: st.Refused, Failures: st.Failures,
		AlertsPushed: st.AlertsPushed, AlertsDropped: st.AlertsDropped}
}
