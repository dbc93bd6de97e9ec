package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/metrics"
	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/sources"
)

// Run protects the configured interfaces until ctx ends or the timeout
// passes. Everything that can be refused (settings, the blocklist, the
// interfaces, the metrics address) is checked before the program attaches.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}

	for _, name := range cfg.Ifaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return fmt.Errorf("--iface %s: no such interface", name)
		}
	}
	var blocklist []netip.Prefix
	if cfg.Blocklist != "" {
		var err error
		if blocklist, err = sources.LoadFile(cfg.Blocklist); err != nil {
			return fmt.Errorf("--blocklist: %w", err)
		}
	}
	allow, err := hostAllowlist(cfg.SSHConnection)
	if err != nil {
		return err
	}
	allow = append(allow, cfg.Allow...)

	release, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer release()

	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return fmt.Errorf("--metrics-addr %s: %w", cfg.MetricsAddr, err)
		}
		defer metricsLn.Close()
	}

	out, err := openOutputs(cfg)
	if err != nil {
		return err
	}
	defer out.close()

	dp, err := dataplane.Load(dataplane.Options{PinPath: cfg.PinPath})
	if err != nil {
		return err
	}
	defer dp.Close()
	if dp.Adopted() {
		log.Info("adopted the maps pinned by an earlier run", "pin_path", cfg.PinPath)
	}
	// A start that fails undoes what it created; what an earlier run left
	// pinned stays, since it may be what still protects the host.
	started := false
	defer func() {
		if !started && !dp.Adopted() {
			_ = dp.Unpin()
		}
	}()

	if err := dp.SetSettings(cfg.settings()); err != nil {
		return err
	}
	if err := syncAllowlist(dp, allow); err != nil {
		return err
	}
	if err := applyBlocklist(dp, blocklist); err != nil {
		return err
	}
	warnAllowOverlap(log, blocklist, allow)
	if len(blocklist) > 0 {
		log.Info("blocklist loaded", "file", cfg.Blocklist, "entries", len(blocklist))
	}

	events, err := dp.Events()
	if err != nil {
		return err
	}

	d := &daemon{cfg: cfg, log: log, dp: dp, out: out, ifnames: map[int]string{}}
	d.metrics = metrics.New(dp, d.attachedInfo, cfg.Version)

	for _, name := range cfg.Ifaces {
		a, err := dp.Attach(name, cfg.XDPMode)
		if err != nil {
			d.abandon()
			events.Close()
			return err
		}
		d.mu.Lock()
		d.attachments = append(d.attachments, a)
		d.ifnames[a.Ifindex] = a.Iface
		d.mu.Unlock()
		log.Info("protecting interface", "iface", a.Iface, "xdp_mode", a.Mode)
	}
	started = true

	var wg sync.WaitGroup
	wg.Go(func() { d.readEvents(ctx, events) })
	wg.Go(func() { d.sweep(ctx) })
	var srv *http.Server
	if metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", d.metrics.Handler())
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "err", err)
			}
		})
		log.Info("serving metrics", "url", "http://"+metricsLn.Addr().String()+"/metrics")
	}
	log.Info("hbf is running", "max_ports", cfg.MaxPorts, "window", cfg.Window, "block_duration", cfg.BlockDuration)
	if cfg.Ready != nil {
		cfg.Ready()
	}

	<-ctx.Done()
	log.Info("stopping", "reason", context.Cause(ctx))
	if srv != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(shutdownCtx)
		cancel()
	}
	wg.Wait() // the reader has reported what the program sent before the stop
	events.Close()
	if !cfg.DetachOnExit {
		d.releaseAll()
		log.Info("stopped; enforcement stays in place: the program remains attached and its maps pinned",
			"pin_path", cfg.PinPath, "remove_with", "hbf uninstall")
		return nil
	}
	d.detachAll()
	if err := dp.Unpin(); err != nil {
		log.Warn("could not remove pins", "pin_path", cfg.PinPath, "err", err)
	}
	return nil
}

type daemon struct {
	cfg     Config
	log     *slog.Logger
	dp      *dataplane.Dataplane
	out     *outputs
	metrics *metrics.Metrics

	mu          sync.Mutex
	attachments []*dataplane.Attachment
	ifnames     map[int]string
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
		d.out.write(&report.Connection{Time: ev.Time, Iface: d.ifname(ev.Ifindex), Src: ev.Src, Dst: ev.Dst})
	case *dataplane.Scan:
		d.out.write(&report.Scan{Time: ev.Time, Iface: d.ifname(ev.Ifindex), Src: ev.Src, Dst: ev.Dst,
			Ports: ev.Ports, Allowlisted: ev.Allowlisted})
		if ev.Blocked {
			duration := d.cfg.BlockDuration
			if ev.Expires.IsZero() {
				duration = 0
			}
			d.out.write(&report.Block{Time: ev.Time, Prefix: netip.PrefixFrom(ev.Src, ev.Src.BitLen()),
				Reason: "port scan", Duration: duration, Expires: ev.Expires})
		}
		if ev.BlockFailed {
			d.log.Error("scanner not blocked: the block map is full; its new ports are still dropped for the window",
				"src", ev.Src)
		}
	}
}

// sweep clears what the program already ignores (expired rules) and the
// scan state of idle sources, so the fixed-size maps keep room.
func (d *daemon) sweep(ctx context.Context) {
	every := min(max(d.cfg.Window, time.Second), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st, err := d.dp.Sweep(d.cfg.Window)
			if err != nil {
				d.log.Warn("sweep failed", "err", err)
			} else if st.Blocks > 0 || st.Allows > 0 {
				d.log.Info("expired entries removed", "blocks", st.Blocks, "allows", st.Allows)
			}
		}
	}
}

// syncAllowlist makes the kernel's allowlist exactly want: entries an
// earlier run left for settings that changed must not keep exempting anyone.
func syncAllowlist(dp *dataplane.Dataplane, want []netip.Prefix) error {
	have, err := dp.Allows()
	if err != nil {
		return err
	}
	wanted := make(map[netip.Prefix]bool, len(want))
	for _, p := range want {
		wanted[p] = true
	}
	for _, r := range have {
		if !wanted[r.Prefix] {
			if _, err := dp.Disallow(r.Prefix); err != nil {
				return err
			}
		}
	}
	for _, p := range want {
		if err := dp.Allow(p, time.Time{}); err != nil {
			return err
		}
	}
	return nil
}

// applyBlocklist writes the whole list or, if the kernel refuses an entry,
// none of it.
func applyBlocklist(dp *dataplane.Dataplane, list []netip.Prefix) error {
	for i, p := range list {
		if err := dp.Block(p, time.Time{}); err != nil {
			for _, q := range list[:i] {
				_, _ = dp.Unblock(q)
			}
			return fmt.Errorf("--blocklist: %w (nothing from the list was applied)", err)
		}
	}
	return nil
}

func warnAllowOverlap(log *slog.Logger, blocklist, allow []netip.Prefix) {
	for _, b := range blocklist {
		for _, a := range allow {
			if b.Overlaps(a) {
				log.Warn("blocklist entry overlaps the allowlist: allowlisted sources stay reachable",
					"entry", b, "allowlisted", a)
			}
		}
	}
}

type outputs struct {
	log     *slog.Logger
	writers []*report.Writer
	file    *os.File
	failed  []bool
}

func openOutputs(cfg Config) (*outputs, error) {
	o := &outputs{log: cfg.Logger}
	if cfg.Stdout != nil {
		o.writers = append(o.writers, report.NewWriter(cfg.Stdout, cfg.LogFormat))
	}
	if cfg.LogFile != "" {
		f, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("--log-file: %w", err)
		}
		o.file = f
		o.writers = append(o.writers, report.NewWriter(f, cfg.LogFormat))
	}
	o.failed = make([]bool, len(o.writers))
	return o, nil
}

// write sends ev to every output; one failing output does not stop the
// others, and its failure is logged once.
func (o *outputs) write(ev report.Event) {
	for i, w := range o.writers {
		if err := w.Write(ev); err != nil && !o.failed[i] {
			o.failed[i] = true
			o.log.Error("cannot write events", "output", i, "err", err)
		}
	}
}

func (o *outputs) close() {
	if o.file != nil {
		o.file.Close()
	}
}
