package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/hostnet"
	"github.com/hbf-firewall/hbf/internal/metrics"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/store"
)

const (
	// reconcileEvery: how often the kernel and the store are brought in
	// step besides at start and as soon as events are lost. It walks every
	// kernel entry: with a million, ~1 CPU-second each time.
	reconcileEvery = 5 * time.Minute
	backupEvery    = time.Minute
)

// errUninstall ends Run removing enforcement, whatever DetachOnExit says.
var errUninstall = errors.New("hbf uninstall")

// Run protects the configured interfaces until ctx ends, the timeout
// passes, or `hbf stop` or `hbf uninstall` asks. Everything that can be
// refused (settings, lists, interfaces, addresses) is checked before the
// program attaches, and the kernel holds every decision before the daemon
// says it is running.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Deps.Logger
	log.Info("starting", "version", cfg.Deps.Version, "ifaces", cfg.Start.Ifaces)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if cfg.Start.Timeout > 0 {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeout(ctx, cfg.Start.Timeout)
		defer cancelTimeout()
	}

	for _, name := range cfg.Start.Ifaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return fmt.Errorf("--iface %s: no such interface", name)
		}
	}
	host, err := hostnet.Read(cfg.Settings.ResolvConf)
	if err != nil {
		return err
	}
	hostChanges, err := hostnet.Subscribe()
	if err != nil {
		return err
	}
	defer hostChanges.Close()
	fixed := fixedAllows(cfg.Start.SSHConnection, cfg.Settings, host)

	release, err := lockStateDir(cfg.Start.StateDir)
	if err != nil {
		return err
	}
	defer release()
	st, recovery, err := store.Open(cfg.Start.StateDir)
	if err != nil {
		return fmt.Errorf("%w (what hbf pinned, if anything, stays in force)", err)
	}
	defer st.Close()
	if recovery.Found != "" {
		log.Warn("the store was damaged", "found", recovery.Found, "did", recovery.Did)
	}
	audit, err := openAudit(cfg.Start.StateDir)
	if err != nil {
		return err
	}
	defer audit.close()

	// Health answers from now on: a long start is visible as not ready.
	var web *httpServer
	if cfg.Start.MetricsAddr != "" {
		ln, err := net.Listen("tcp", cfg.Start.MetricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-addr %s: %w", cfg.Start.MetricsAddr, err)
		}
		web = serveHTTP(ln, log)
		defer web.close()
		log.Info("serving metrics and health", "url", "http://"+ln.Addr().String()+"/metrics")
	}
	apiLn, err := api.Listen(cfg.Start.Socket)
	if err != nil {
		return fmt.Errorf("--socket %w", err)
	}
	defer func() {
		apiLn.Close()
		os.Remove(cfg.Start.Socket)
	}()

	out, err := openOutputs(cfg)
	if err != nil {
		return err
	}
	defer out.close()

	progress := func(step string) {
		if web != nil {
			web.setReady(step)
		}
	}
	progress("starting: reading the lists and loading the program")
	// Reading the lists and loading the program (the verifier) take about
	// as long each: one runs while the other does.
	allows, err := st.Allows()
	if err != nil {
		return fmt.Errorf("read the store: %w", err)
	}
	listsDone := make(chan listsRead, 1)
	go func() {
		check := checker(cfg.Settings.Rules, protectedFrom(fixed, slices.Values(allows), time.Now()))
		listsDone <- newLoader(cfg.Start.StateDir, cfg.Deps.Version, st, check, log).readAll(specsOf(cfg.Settings))
	}()

	dp, err := dataplane.Load(dataplane.Options{PinPath: cfg.Start.PinPath, ReplaceForeign: cfg.Start.Replace})
	read := <-listsDone
	if err != nil {
		return err
	}
	defer dp.Close()
	if dp.Adopted() {
		log.Info("adopted the maps pinned by an earlier run", "pin_path", cfg.Start.PinPath)
	}
	if old := dp.Migrating(); old != "" {
		log.Info("taking over the state of an earlier hbf's layout", "from", old)
	}
	// A start that fails undoes what it created; what an earlier run left
	// pinned stays, since it may be what still protects the host.
	started := false
	defer func() {
		if !started && !dp.Adopted() && dp.Migrating() == "" {
			_ = dp.Unpin()
		}
	}()
	if err := dp.SetSettings(cfg.Settings.program()); err != nil {
		return err
	}
	if err := dp.SetOnLink(host.Prefixes); err != nil {
		return err
	}

	d := &daemon{start: cfg.Start, deps: cfg.Deps, live: cfg.Settings, log: log, dp: dp, out: out, hub: newHub(), ifnames: map[int]string{},
		started: time.Now(), storeStatus: "ok", conns: &connLimiter{mode: cfg.Settings.ConnLog}, program: cfg.Settings.program(),
		host: host, repairs: map[string]uint64{}}
	if recovery.Found != "" {
		d.storeStatus = recovery.String()
	}
	d.state, err = newState(dp, st, cfg.Settings.Rules, fixed, audit, d.publish, log)
	if err != nil {
		return err
	}
	d.state.SetEscalation(cfg.Settings.Escalation, cfg.Settings.BlockDuration)
	if read.err != nil {
		return read.err
	}
	d.state.SetLists(read.lists)
	progress("starting: writing the decisions to the kernel")
	began := time.Now()
	stats, err := d.state.Reconcile(recovery.Empty)
	if err != nil {
		return fmt.Errorf("bring the kernel in step with the store: %w", err)
	}
	log.Info("kernel in step with the store", "written", stats.Written, "removed", stats.Removed,
		"adopted", stats.Adopted, "took", time.Since(began).Round(time.Millisecond))
	if err := st.Backup(); err != nil {
		log.Warn("cannot back up the store", "err", err)
	}
	d.metrics = metrics.New(metrics.Inputs{Dataplane: dp, Attached: d.attachedInfo, Lists: d.listHealth,
		Repairs: d.repairCounts, Dropped: out.Dropped}, cfg.Deps.Version)

	events, err := dp.Events()
	if err != nil {
		return err
	}
	progress("starting: attaching to the interfaces")
	for _, name := range cfg.Start.Ifaces {
		a, err := dp.Attach(name, cfg.Start.XDPMode)
		if err != nil {
			d.abandon()
			events.Close()
			return attachError(err)
		}
		d.mu.Lock()
		d.attachments = append(d.attachments, a)
		d.ifnames[a.Ifindex] = a.Iface
		d.mu.Unlock()
		log.Info("protecting interface", "iface", a.Iface, "xdp_mode", a.Mode)
	}
	started = true
	for _, what := range dp.Replaced() {
		log.Warn("detached another XDP program to attach (--replace)", "replaced", what)
	}
	if old := dp.Migrating(); old != "" {
		n, err := dp.FinishMigration()
		if err != nil {
			log.Error("the migration from an earlier layout is incomplete; its pins stay", "from", old, "err", err)
		} else {
			log.Info("migrated from an earlier layout; its pins are removed", "from", old, "late_blocks", n)
		}
	}

	var wg sync.WaitGroup
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = d.reload(st, "SIGHUP")
			}
		}
	})
	for _, save := range read.saveCopies {
		wg.Go(save)
	}
	wg.Go(func() { d.readEvents(ctx, events) })
	wg.Go(func() { d.maintain(ctx, st) })
	wg.Go(func() { d.followHost(ctx, hostChanges) })
	wg.Go(func() { d.watchdog(ctx) })
	wg.Go(func() {
		svc := &service{d: d, st: st, audit: audit, cancel: cancel}
		if err := api.Serve(ctx, apiLn, svc, api.DefaultTimeouts); err != nil {
			log.Error("API server stopped", "err", err)
		}
	})
	if web != nil {
		web.setMetrics(d.metrics.Handler())
		web.setReady("") // attached, lists loaded, store open
	}
	log.Info("hbf is running", "mode", ModeName(cfg.Settings.Monitor), "max_ports", cfg.Settings.MaxPorts, "window", cfg.Settings.Window,
		"block_duration", cfg.Settings.BlockDuration, "socket", cfg.Start.Socket)

	<-ctx.Done()
	cause := context.Cause(ctx)
	log.Info("stopping", "reason", cause)
	if web != nil {
		web.setReady("stopping")
	}
	wg.Wait() // the reader has reported what the program sent before the stop
	events.Close()
	if err := st.Backup(); err != nil {
		log.Warn("cannot back up the store", "err", err)
	}
	if !cfg.Start.DetachOnExit && !errors.Is(cause, errUninstall) {
		d.releaseAll()
		log.Info("stopped; enforcement stays in place: the program remains attached and its maps pinned",
			"pin_path", cfg.Start.PinPath, "remove_with", "hbf uninstall")
		return nil
	}
	d.detachAll()
	if err := dp.Unpin(); err != nil {
		log.Warn("could not remove pins", "pin_path", cfg.Start.PinPath, "err", err)
	}
	return nil
}

// attachError says what to do about an interface another XDP program holds.
func attachError(err error) error {
	fe, ok := errors.AsType[*dataplane.ForeignXDPError](err)
	switch {
	case !ok:
		return err
	case fe.Replacing:
		return fmt.Errorf("attach to %s: %w and --replace could not detach it (see `ip link show %s`): "+
			"another tool's bpf_link can be detached only with CAP_SYS_ADMIN: %v", fe.Iface, dataplane.ErrForeignXDP, fe.Iface, fe.Err)
	default:
		return fmt.Errorf("attach to %s: %w (see `ip link show %s`): hbf does not share an interface; "+
			"remove that program, or start hbf with --replace to detach it: %v", fe.Iface, dataplane.ErrForeignXDP, fe.Iface, fe.Err)
	}
}

// fixedAllows are the entries never blocked: loopback, the host's own
// addresses, gateways and resolvers, the SSH client, and --allow.
func fixedAllows(sshConnection string, set Settings, host hostnet.Snapshot) []fixedAllow {
	out := neverBlock(host, set.ResolvConf, sshConnection)
	for _, p := range set.Allow {
		out = append(out, fixedAllow{prefix: p, origin: "flag", why: "allowed by --allow"})
	}
	return out
}

type daemon struct {
	start   Start
	deps    Deps
	log     *slog.Logger
	dp      *dataplane.Dataplane
	state   *state
	out     *outputs
	hub     *hub
	conns   *connLimiter
	metrics *metrics.Metrics
	started time.Time

	reloadMu sync.Mutex // one reload or list re-read at a time

	mu          sync.Mutex
	attachments []*dataplane.Attachment
	ifnames     map[int]string
	storeStatus string
	live        Settings           // the settings in force: the start's, or the last reload's
	program     dataplane.Settings // what the program runs with now
	host        hostnet.Snapshot   // the host's addresses, gateways and resolvers now
	repairs     map[string]uint64  // what the watchdog repaired, by kind
	hostErr     string             // the last failure to read the host's network, logged once
}

// settings are the settings in force.
func (d *daemon) settings() Settings {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live
}

// currentProgram is what the program runs with, which hbf mode changes.
func (d *daemon) currentProgram() dataplane.Settings {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.program
}

// setProgram changes what the program runs with.
func (d *daemon) setProgram(s dataplane.Settings) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.dp.SetSettings(s); err != nil {
		return err
	}
	d.program = s
	return nil
}

// publish writes an event to the outputs and to `hbf events`.
func (d *daemon) publish(ev report.Event) {
	d.out.write(ev)
	if line, err := report.AppendJSON(nil, ev); err == nil {
		d.hub.publish(line)
	}
}

func (d *daemon) attachedInfo() []metrics.Attachment {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]metrics.Attachment, len(d.attachments))
	for i, a := range d.attachments {
		out[i] = metrics.Attachment{Iface: a.Iface, Mode: string(a.Mode)}
	}
	return out
}

func (d *daemon) listHealth() (ok, degraded int) {
	for _, l := range d.state.Lists() {
		if l.degraded != "" {
			degraded++
		} else {
			ok++
		}
	}
	return ok, degraded
}

func (d *daemon) detachAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.attachments {
		if err := a.Detach(); err != nil {
			d.log.Error("detach failed", "iface", a.Iface, "err", err)
			continue
		}
		d.log.Info("detached", "iface", a.Iface)
	}
	d.attachments = nil
}

// releaseAll closes this process's handles; the pinned links stay attached.
func (d *daemon) releaseAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.attachments {
		_ = a.Release()
	}
	d.attachments = nil
}

// abandon gives up a failed start: it detaches what it attached and leaves
// adopted links as it found them, attached.
func (d *daemon) abandon() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.attachments {
		if a.Mode == dataplane.XDPAdopted {
			_ = a.Release()
		} else {
			_ = a.Detach()
		}
	}
	d.attachments = nil
}

func (d *daemon) ifname(index int) string {
	d.mu.Lock()
	name, ok := d.ifnames[index]
	d.mu.Unlock()
	if ok {
		return name
	}
	if ifc, err := net.InterfaceByIndex(index); err == nil {
		return ifc.Name
	}
	return ""
}

// readEvents reports the program's events until ctx ends, then what is
// still in the ring.
func (d *daemon) readEvents(ctx context.Context, rd *dataplane.EventReader) {
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
			d.publish(&report.Connection{Time: ev.Time, Iface: d.ifname(ev.Ifindex), Src: ev.Src, Dst: ev.Dst})
		}
	case *dataplane.Scan:
		ports := make([]uint16, len(ev.Ports))
		for i, p := range ev.Ports {
			ports[i] = p.Port
		}
		sc := &report.Scan{Time: ev.Time, Iface: d.ifname(ev.Ifindex), Src: ev.Src, Dst: ev.Dst,
			Ports: ports, Allowlisted: ev.Allowlisted, WouldBlock: ev.WouldBlock, RateLimited: ev.RateLimited}
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

// maintain ends expired decisions, reconciles the kernel and the store, and
// backs the store up, until ctx ends.
func (d *daemon) maintain(ctx context.Context, st *store.Store) {
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
			d.watchLists(st)
		case <-sweep.C:
			if err := d.state.Sweep(d.currentProgram().Window); err != nil {
				d.log.Warn("sweep failed", "err", err)
			}
			// Lost events may have been scans: what they would have told
			// is in the kernel, so look there now.
			if n := d.eventsLost(); n > lost {
				d.log.Warn("events were lost (ring buffer full); reconciling with the kernel", "lost", n-lost)
				lost = n
				d.reconcile()
			}
		case <-reconcile.C:
			d.reconcile()
		case <-backup.C:
			if err := st.Backup(); err != nil {
				d.log.Warn("cannot back up the store", "err", err)
			}
		}
	}
}

func portsText(ports []uint16) string {
	if len(ports) == 0 {
		return "-"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// flushSuppressed writes how many connection lines the limit held back.
func (d *daemon) flushSuppressed() {
	if n := d.conns.takeSuppressed(); n > 0 {
		d.publish(&report.Suppressed{Time: time.Now(), Count: n})
	}
}

func (d *daemon) eventsLost() uint64 {
	k, err := d.dp.Counters()
	if err != nil {
		return 0
	}
	return k.EventsLost
}

func (d *daemon) reconcile() {
	stats, err := d.state.Reconcile(false)
	if err != nil {
		d.log.Warn("reconciliation failed", "err", err)
	} else if stats != (reconcileStats{}) {
		d.log.Info("kernel and store brought in step", "written", stats.Written, "removed", stats.Removed,
			"adopted", stats.Adopted, "fixed", stats.Fixed)
	}
}

// service answers the API.
type service struct {
	d      *daemon
	st     *store.Store
	audit  *auditLog
	cancel context.CancelCauseFunc
}

func (s *service) Block(_ context.Context, c api.Caller, req api.ChangeRequest) []api.Result {
	return s.d.state.Block(c, req.Targets, req.For, req.Reason)
}

func (s *service) Unblock(_ context.Context, c api.Caller, req api.ChangeRequest) []api.Result {
	return s.d.state.Unblock(c, req.Targets, req.All)
}

func (s *service) Allow(_ context.Context, c api.Caller, req api.ChangeRequest) []api.Result {
	return s.d.state.Allow(c, req.Targets, req.For, req.Reason)
}

func (s *service) Disallow(_ context.Context, c api.Caller, req api.ChangeRequest) []api.Result {
	return s.d.state.Disallow(c, req.Targets)
}

func (s *service) Blocks(ctx context.Context, fn func(api.Block) error) error {
	return s.d.state.Blocks(ctx, fn)
}

func (s *service) Allows(context.Context) ([]api.Allow, error) { return s.d.state.Allows(), nil }

func (s *service) Why(_ context.Context, addr netip.Addr) (api.Why, error) {
	return s.d.state.Why(addr), nil
}

func (s *service) Events(ctx context.Context, follow bool, fn func(json.RawMessage) error) error {
	return s.d.hub.Events(ctx, follow, fn)
}

func (s *service) SetMode(_ context.Context, c api.Caller, mode string) error {
	monitor, err := ParseMode(mode)
	if err == nil {
		set := s.d.currentProgram()
		set.Monitor = monitor
		err = s.d.setProgram(set)
	}
	s.audit.change(c, "mode", mode, err)
	if err != nil {
		return err
	}
	s.d.log.Info("mode changed", "mode", mode, "by", c.String())
	return nil
}

func (s *service) Reload(_ context.Context, c api.Caller) error {
	err := s.d.reload(s.st, c.String())
	s.audit.change(c, "reload", "", err)
	return err
}

func (s *service) Stop(_ context.Context, c api.Caller) error {
	s.audit.event(c, "stop")
	s.cancel(fmt.Errorf("hbf stop (%s)", c))
	return nil
}

func (s *service) Uninstall(_ context.Context, c api.Caller) error {
	s.audit.event(c, "uninstall")
	s.cancel(fmt.Errorf("%w (%s)", errUninstall, c))
	return nil
}

func (s *service) Status(context.Context) (api.Status, error) {
	d := s.d
	k, err := d.dp.Counters()
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
			"mode":            ModeName(set.Monitor),
			"max_ports":       strconv.Itoa(set.MaxPorts),
			"window":          set.Window.String(),
			"block_duration":  set.BlockDuration.String(),
			"log_connections": d.conns.String(),
			"ignore_ports":    portsText(set.IgnorePorts),
			"pin_path":        d.start.PinPath,
			"state_dir":       d.start.StateDir,
			"detach_on_exit":  strconv.FormatBool(d.start.DetachOnExit),
			"config":          live.ConfigFile,

			"scan_blocks_per_minute": strconv.Itoa(set.MaxBlocksPerMinute),
			"scan_prefix_v6":         "/" + strconv.Itoa(set.IPv6ScanPrefix),
		},
		Counters: map[string]uint64{},
		Entries:  d.state.counts(),
	}
	for _, c := range dataplane.CounterTable() {
		if c.Status != "" {
			st.Counters[c.Status] = c.Value(&k)
		}
	}
	d.mu.Lock()
	for _, a := range d.attachments {
		st.Interfaces = append(st.Interfaces, api.Interface{Name: a.Iface, Mode: string(a.Mode)})
	}
	for kind, n := range d.repairs {
		st.Counters["repairs_"+kind] = n
	}
	st.Store = d.storeStatus
	d.mu.Unlock()
	for _, l := range d.state.Lists() {
		status := "ok"
		if l.degraded != "" {
			status = l.degraded
		}
		st.Lists = append(st.Lists, api.ListStatus{Source: l.spec.where, Entries: l.list.Len(), Loaded: l.loaded, Status: status})
	}
	return st, nil
}

// outputs writes event lines to stdout and the log file from a queue of
// its own: a reader of stdout that stalls (a paused pager, a backed-up log
// collector) must not stall the event reader, the API or the state lock
// behind a blocked write. When the queue is full a line is dropped and
// counted (hbf_events_lost_total), and the count is logged once writing
// resumes.
type outputs struct {
	log     *slog.Logger
	format  report.Format
	queue   chan report.Event
	done    chan struct{}
	dropped atomic.Uint64
	// closing guards the queue's close against a late write.
	closing sync.RWMutex
	closed  bool

	mu     sync.Mutex // the writers, which reopen changes
	stdout *report.Writer
	file   *os.File
	toFile *report.Writer
	failed map[*report.Writer]bool
}

// outputQueue holds the lines waiting for a slow output: a burst of
// connections, or a second or two of a stalled reader.
const outputQueue = 16384

func openOutputs(cfg Config) (*outputs, error) {
	o := &outputs{log: cfg.Deps.Logger, format: cfg.Start.LogFormat, failed: map[*report.Writer]bool{},
		queue: make(chan report.Event, outputQueue), done: make(chan struct{})}
	if cfg.Deps.Stdout != nil {
		o.stdout = report.NewWriter(cfg.Deps.Stdout, cfg.Start.LogFormat)
	}
	if err := o.reopen(cfg.Settings.LogFile); err != nil {
		return nil, err
	}
	go o.run()
	return o, nil
}

// reopen (re)opens the log file at path, "" for none: logrotate moves the
// file away, a reload makes a new one.
func (o *outputs) reopen(path string) error {
	var f *os.File
	if path != "" {
		var err error
		if f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640); err != nil {
			return fmt.Errorf("--log-file: %w", err)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		o.file.Close()
	}
	o.file, o.toFile = f, nil
	if f != nil {
		o.toFile = report.NewWriter(f, o.format)
	}
	return nil
}

// write queues ev for every output; it never blocks.
func (o *outputs) write(ev report.Event) {
	o.closing.RLock()
	defer o.closing.RUnlock()
	if o.closed {
		return
	}
	select {
	case o.queue <- ev:
	default:
		o.dropped.Add(1)
	}
}

// Dropped counts the lines dropped because the outputs did not keep up.
func (o *outputs) Dropped() uint64 { return o.dropped.Load() }

func (o *outputs) run() {
	defer close(o.done)
	var reported uint64
	for ev := range o.queue {
		o.mu.Lock()
		for _, w := range []*report.Writer{o.stdout, o.toFile} {
			if w == nil {
				continue
			}
			// One failing output does not stop the others.
			if err := w.Write(ev); err != nil && !o.failed[w] {
				o.failed[w] = true
				o.log.Error("cannot write events", "err", err)
			}
		}
		o.mu.Unlock()
		if n := o.dropped.Load(); n != reported {
			o.log.Warn("event lines were dropped: the output did not keep up (counted in hbf_events_lost_total)",
				"dropped", n-reported, "total", n)
			reported = n
		}
	}
}

// close writes what is queued, for at most a few seconds (the output may
// be the stalled one), and closes the log file.
func (o *outputs) close() {
	o.closing.Lock()
	o.closed = true
	close(o.queue)
	o.closing.Unlock()
	select {
	case <-o.done:
	case <-time.After(3 * time.Second):
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		o.file.Close()
	}
}
