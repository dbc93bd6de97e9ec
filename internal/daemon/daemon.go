package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/decision"
	"github.com/hbf-firewall/hbf/internal/hostnet"
	"github.com/hbf-firewall/hbf/internal/metrics"
	"github.com/hbf-firewall/hbf/internal/natports"
	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/protect"
	"github.com/hbf-firewall/hbf/internal/store"
)

// errUninstall ends Run removing enforcement, whatever DetachOnExit says.
var errUninstall = errors.New("hbf uninstall")

// kernel is what the running daemon needs of the data plane: its rules,
// counters and settings. *dataplane.Dataplane is one, kerneltest.Fake
// another; what only the loaded program does (attach, events, pins) is
// links' and the start's.
type kernel interface {
	dataplane.Rules
	Counters() (dataplane.Counters, error)
	SetSettings(dataplane.Settings) error
	LimitStats() (map[ports.Port]dataplane.LimitStats, error)
	SetOnLink([]netip.Prefix) error
	SetLocalAddrs([]netip.Addr) error
	SetServed([]ports.Port) error
	WatchHot(on bool) error
	DrainHot() ([]dataplane.Hot, error)
}

type daemon struct {
	start Start
	deps  Deps
	log   *slog.Logger

	k       kernel
	state   *decision.Engine
	st      *store.Store
	audit   *decision.Audit
	out     *outputs
	hub     *hub
	conns   *connLimiter
	metrics *metrics.Metrics
	started time.Time

	// What only a start opens, and the stop closes.
	dp          *dataplane.Dataplane
	links       *links
	fleet       *fleetLink    // nil outside a fleet
	crowdsec    *crowdsecLink // nil without a LAPI
	hot         topView       // the busiest blocks, while hbf top asks
	events      *dataplane.EventReader
	hostChanges *hostnet.Changes
	natReader   *natports.Reader
	servedErr   string      // the last failure to read the NAT rules, logged once
	web         *httpServer // nil without a metrics address
	apiLn       net.Listener
	saveCopies  []func() // of the lists read at start
	closers     []func() // what start opened, in order
	wg          sync.WaitGroup

	reloadMu sync.Mutex // one reload or list re-read at a time

	mu          sync.Mutex
	live        Settings           // the settings in force: the start's, or the last reload's
	program     dataplane.Settings // what the program runs with now
	host        hostnet.Snapshot   // the host's addresses, gateways and resolvers now
	hostErr     string             // the last failure to read the host's network, logged once
	guard       guarded            // what else is never blocked: NTP, metadata, etcd, members
	namesErr    string             // the last failure to resolve those names, logged once
	served      natports.Snapshot  // the ports the host serves without sockets (DNAT, IPVS)
	storeStatus string
	recovering  bool // the store was lost: the kernel's entries become its records
}

// Run protects the configured interfaces until ctx ends, the timeout
// passes, or `hbf stop` or `hbf uninstall` asks. Everything that can be
// refused (settings, lists, interfaces, addresses) is checked before the
// program attaches, and the kernel holds every decision before the daemon
// says it is running.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if cfg.Start.Timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, cfg.Start.Timeout)
		defer stop()
	}
	d, err := start(cfg)
	if err != nil {
		return err
	}
	d.serve(ctx, cancel)
	<-ctx.Done()
	d.stop(context.Cause(ctx))
	return nil
}

// start takes the daemon as far as protecting its interfaces, step by
// step. A start that fails undoes what it did; what an earlier run left
// pinned stays, since it may be what still protects the host.
func start(cfg Config) (d *daemon, err error) {
	d = &daemon{start: cfg.Start, deps: cfg.Deps, log: cfg.Deps.Logger, live: cfg.Settings,
		hub: newHub(), conns: &connLimiter{mode: cfg.Settings.ConnLog},
		started: time.Now(), storeStatus: "ok"}
	d.log.Info("starting", "version", d.deps.Version, "ifaces", d.start.Ifaces)
	defer func() {
		if err != nil {
			d.abandon()
		}
	}()
	for _, step := range []func() error{d.openHost, d.openState, d.openServers, d.loadProgram, d.openFleet, d.openCrowdSec, d.attach} {
		if err := step(); err != nil {
			return d, err
		}
	}
	return d, nil
}

// closeLater registers what the stop, or a failed start, closes.
func (d *daemon) closeLater(fn func()) { d.closers = append(d.closers, fn) }

// openHost checks the interfaces and reads and follows the host's network.
func (d *daemon) openHost() error {
	for _, name := range d.start.Ifaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return fmt.Errorf("--iface %s: no such interface", name)
		}
	}
	host, err := hostnet.Read(d.live.ResolvConf)
	if err != nil {
		return err
	}
	d.host = host
	d.program = d.live.program(d.ephemeralPorts())
	if d.hostChanges, err = hostnet.Subscribe(); err != nil {
		return err
	}
	d.closeLater(func() { d.hostChanges.Close() })
	return nil
}

// openState takes the state folder's lock and opens the store and the
// audit log.
func (d *daemon) openState() error {
	release, err := lockStateDir(d.start.StateDir)
	if err != nil {
		return err
	}
	d.closeLater(release)
	st, recovery, err := store.Open(d.start.StateDir)
	if err != nil {
		return fmt.Errorf("%w (what hbf pinned, if anything, stays in force)", err)
	}
	d.st = st
	d.closeLater(func() { st.Close() })
	if recovery.Found != "" {
		d.log.Warn("the store was damaged", "found", recovery.Found, "did", recovery.Did)
		d.storeStatus = recovery.String()
	}
	d.recovering = recovery.Empty
	if d.audit, err = decision.OpenAudit(d.start.StateDir); err != nil {
		return err
	}
	d.closeLater(func() { d.audit.Close() })
	return nil
}

// openServers opens the metrics and health server (it answers from now
// on: a long start is visible as not ready), the API's socket and the
// event outputs.
func (d *daemon) openServers() error {
	if addr := d.start.MetricsAddr; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--metrics-addr %s: %w", addr, err)
		}
		d.web = serveHTTP(ln, d.log)
		d.closeLater(d.web.close)
		d.log.Info("serving metrics and health", "url", "http://"+ln.Addr().String()+"/metrics")
	}
	apiLn, err := api.Listen(d.start.Socket)
	if err != nil {
		return fmt.Errorf("--socket %w", err)
	}
	d.apiLn = apiLn
	d.closeLater(func() {
		apiLn.Close()
		os.Remove(d.start.Socket)
	})
	if d.out, err = openOutputs(d.log, d.start.LogFormat, d.deps.Stdout, d.live.LogFile); err != nil {
		return err
	}
	d.closeLater(d.out.close)
	return nil
}

// progress says which step a start is at, on /readyz.
func (d *daemon) progress(step string) {
	if d.web != nil {
		d.web.setReady(step)
	}
}

// loadProgram loads the program and reads the lists, which take about as
// long each (the verifier, the parsing): one runs while the other does.
// Then it writes every decision to the kernel.
func (d *daemon) loadProgram() error {
	d.progress("starting: reading the lists and loading the program")
	allows, err := d.st.Allows()
	if err != nil {
		return fmt.Errorf("read the store: %w", err)
	}
	listsDone := make(chan listsRead, 1)
	go func() {
		// The lists are checked against what is protected, names resolved.
		if err := d.findProtected(); err != nil {
			listsDone <- listsRead{err: err}
			return
		}
		set := protect.NewSet(d.protectedBase(d.live, d.host), decision.AllowEntries(allows, time.Now()))
		listsDone <- readAll(d.loader(decision.Checker(d.live.Rules, set, explain)), specsOf(d.live))
	}()
	hook, err := d.chooseHook()
	if err != nil {
		<-listsDone
		return err
	}
	// The program is verified while the decisions are written (Ready).
	dp, err := dataplane.Open(dataplane.Options{PinPath: d.start.PinPath, ReplaceForeign: d.start.Replace, Hook: hook,
		TCXTail: d.start.TCXTail, Capacity: d.start.capacity()})
	read := <-listsDone
	if err != nil {
		return explain(err)
	}
	if read.err == nil {
		if err := decision.ListsFit(read.lists, dp.Capacity()); err != nil {
			dp.Close()
			return explain(err)
		}
	}
	d.dp, d.k = dp, dp
	d.closeLater(func() { dp.Close() })
	d.links = newLinks(dp, d.start, d.log)
	if dp.Adopted() {
		d.log.Info("adopted the maps pinned by an earlier run", "pin_path", d.start.PinPath)
	}
	if dp.Resizing() {
		d.log.Info("resizing the block maps: every block is copied into maps of the new capacity",
			"max_blocks", d.start.MaxBlocks, "max_block_prefixes", d.start.MaxBlockPrefixes)
	} else if old := dp.Migrating(); old != "" {
		d.log.Info("taking over the state of an earlier hbf's layout", "from", old)
	}
	if err := dp.SetSettings(d.program); err != nil {
		return err
	}
	if err := dp.SetOnLink(d.host.Prefixes); err != nil {
		return err
	}
	if err := dp.SetLocalAddrs(d.host.Addrs); err != nil {
		return err
	}
	d.natReader = natports.NewReader()
	d.readServed()
	d.state, err = decision.New(decision.Config{Kernel: dp, Store: d.st, Rules: d.live.Rules, Protected: d.protectedBase(d.live, d.host),
		Audit: d.audit, Publish: d.publish, Log: d.log, Explain: explain})
	if err != nil {
		return err
	}
	d.state.SetEscalation(d.live.Escalation, d.live.BlockDuration)
	if read.err != nil {
		return read.err
	}
	d.state.SetLists(read.lists)
	d.saveCopies = read.saveCopies
	if err := d.writeDecisions(); err != nil {
		return err
	}
	return dp.Ready()
}

// writeDecisions brings the kernel in step with the store before anything
// attaches, and backs the store up.
func (d *daemon) writeDecisions() error {
	d.progress("starting: writing the decisions to the kernel")
	began := time.Now()
	stats, err := d.state.Reconcile(d.recovering)
	if err != nil {
		return fmt.Errorf("bring the kernel in step with the store: %w", err)
	}
	d.log.Info("kernel in step with the store", "written", stats.Written, "removed", stats.Removed,
		"adopted", stats.Adopted, "took", time.Since(began).Round(time.Millisecond))
	d.backup()
	in := metrics.Inputs{Dataplane: d.k, Blocked: d.state.InForce, Attached: d.links.attached, Lists: d.listHealth,
		Repairs: d.links.repairCounts, Dropped: d.out.Dropped, UndoFailures: d.state.UndoFailures,
		Protected: d.protectedCounts, Limits: d.limitMetrics}
	for _, k := range protect.Kinds() {
		in.ProtectedKinds = append(in.ProtectedKinds, k.String())
	}
	if d.start.Fleet.Enabled() {
		in.Fleet = d.fleetStats
	}
	if d.start.CrowdSec.Enabled() {
		in.CrowdSec = d.crowdsecStats
	}
	d.metrics = metrics.New(in, d.deps.Version)
	return nil
}

// attach opens the event reader and attaches the program to the
// interfaces; from here the host is protected.
func (d *daemon) attach() error {
	events, err := d.dp.Events()
	if err != nil {
		return err
	}
	d.events = events
	d.progress("starting: attaching to the interfaces")
	if err := d.links.attach(d.start.Ifaces); err != nil {
		return err
	}
	for _, iface := range d.start.Ifaces {
		// Only now that this hook enforces: no moment without a filter.
		if moved, err := d.dp.RetireOtherHook(iface); err != nil {
			d.log.Error("the program of the other hook stays attached", "iface", iface, "err", err)
		} else if moved {
			d.log.Info("moved to another hook; the earlier one's program is detached", "iface", iface, "hook", d.dp.Hook())
		}
	}
	for _, what := range d.dp.Replaced() {
		d.log.Warn("detached another XDP program to attach (--replace)", "replaced", what)
	}
	if old := d.dp.Migrating(); old != "" {
		n, err := d.dp.FinishMigration()
		if err != nil {
			d.log.Error("the migration from an earlier layout is incomplete; its pins stay", "from", old, "err", err)
		} else {
			d.log.Info("migrated from an earlier layout; its pins are removed", "from", old, "late_blocks", n)
		}
	}
	return nil
}

// abandon undoes a start that failed.
func (d *daemon) abandon() {
	if d.links != nil {
		d.links.abandon()
	}
	if d.events != nil {
		d.events.Close()
	}
	if d.dp != nil && !d.dp.Adopted() && d.dp.Migrating() == "" {
		_ = d.dp.Unpin()
	}
	d.close()
}

// close closes what start opened, last opened first.
func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// serve runs the daemon's work until ctx ends: events, maintenance, the
// host's changes, the watchdog, reloads and the API. cancel ends it with
// a cause (hbf stop, hbf uninstall).
func (d *daemon) serve(ctx context.Context, cancel context.CancelCauseFunc) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	d.closeLater(func() { signal.Stop(hup) })
	d.wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = d.reload("SIGHUP")
			}
		}
	})
	for _, save := range d.saveCopies {
		d.wg.Go(save)
	}
	d.wg.Go(func() { d.readEvents(ctx) })
	d.wg.Go(func() { d.maintain(ctx) })
	d.wg.Go(func() { d.followHost(ctx) })
	d.wg.Go(func() { d.followNames(ctx) })
	d.wg.Go(func() { d.followServed(ctx) })
	d.wg.Go(func() { d.links.watch(ctx) })
	d.wg.Go(func() { d.unwatchIdle(ctx) })
	if d.fleet != nil {
		d.wg.Go(func() { d.fleet.run(ctx) })
	}
	if d.crowdsec != nil {
		d.wg.Go(func() { d.crowdsec.run(ctx) })
		if d.crowdsec.watcher != nil {
			d.wg.Go(func() { d.crowdsec.pushAlerts(ctx) })
		}
	}
	d.wg.Go(func() {
		svc := &service{d: d, cancel: cancel}
		if err := api.Serve(ctx, d.apiLn, svc, api.DefaultTimeouts); err != nil {
			d.log.Error("API server stopped", "err", err)
		}
	})
	if d.web != nil {
		d.web.setMetrics(d.metrics.Handler())
		d.web.setReady("") // attached, lists loaded, store open
	}
	set := d.live
	d.log.Info("hbf is running", "mode", ModeName(set.Monitor), "max_ports", set.MaxPorts, "window", set.Window,
		"block_duration", set.BlockDuration, "socket", d.start.Socket)
}

// stop ends the work serve started, for cause, and leaves enforcement in
// place unless it was asked to remove it.
func (d *daemon) stop(cause error) {
	d.log.Info("stopping", "reason", cause)
	d.progress("stopping")
	d.wg.Wait() // the reader has reported what the program sent before the stop
	d.events.Close()
	d.backup()
	if !d.start.DetachOnExit && !errors.Is(cause, errUninstall) {
		d.links.release()
		d.log.Info("stopped; enforcement stays in place: the program remains attached and its maps pinned",
			"pin_path", d.start.PinPath, "remove_with", "hbf uninstall")
	} else {
		d.links.detach()
		if err := d.dp.Unpin(); err != nil {
			d.log.Warn("could not remove pins", "pin_path", d.start.PinPath, "err", err)
		}
	}
	d.close()
}

func (d *daemon) backup() {
	if err := d.st.Backup(); err != nil {
		d.log.Warn("cannot back up the store", "err", err)
	}
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
	if err := d.k.SetSettings(s); err != nil {
		return err
	}
	d.program = s
	return nil
}

func (d *daemon) listHealth() (ok, degraded int) {
	for _, l := range d.state.Lists() {
		if l.Degraded != "" {
			degraded++
		} else {
			ok++
		}
	}
	return ok, degraded
}
