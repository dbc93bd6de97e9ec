package daemon

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hbf-firewall/hbf/internal/store"
)

// restartOnly are the settings a reload cannot change: they name what the
// daemon holds open (interfaces, pins, sockets, ports).
func restartOnly(old, next Config) []string {
	var changed []string
	check := func(name string, same bool) {
		if !same {
			changed = append(changed, name)
		}
	}
	check("iface", slices.Equal(old.Ifaces, next.Ifaces))
	check("xdp-mode", old.XDPMode == next.XDPMode)
	check("pin-path", old.PinPath == next.PinPath)
	check("state-dir", old.StateDir == next.StateDir)
	check("socket", old.Socket == next.Socket)
	check("metrics-addr", old.MetricsAddr == next.MetricsAddr)
	check("log-format", old.LogFormat == next.LogFormat)
	check("timeout", old.Timeout == next.Timeout)
	check("detach-on-exit", old.DetachOnExit == next.DetachOnExit)
	check("replace", old.Replace == next.Replace)
	return changed
}

// reload re-reads the configuration and every list, and reopens the log
// file. A configuration that does not parse or check, or a list it newly
// names that does not, refuses the reload whole: the running one stays. A
// list hbf already has that no longer parses keeps the version in force.
func (d *daemon) reload(st *store.Store, by string) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	refuse := func(err error) error {
		d.log.Error("reload refused: the running configuration stays", "by", by, "err", err)
		return fmt.Errorf("reload refused, the running configuration stays: %w", err)
	}
	if d.cfg.Reload == nil {
		return refuse(errors.New("this daemon was started without a way to re-read its configuration"))
	}
	next, err := d.cfg.Reload()
	if err != nil {
		return refuse(err)
	}
	fixed := fixedAllows(next, d.hostSnapshot())
	ld := newLoader(next, st, d.state.Checker(next.Rules, fixed), d.log)
	var lists []*listSource
	for _, spec := range specsOf(next) {
		src, save, err := ld.load(spec, d.listByID(spec.id()))
		if err != nil {
			return refuse(fmt.Errorf("list %w", err))
		}
		lists = append(lists, src)
		if save != nil {
			go save()
		}
	}
	if err := d.out.reopen(next.LogFile); err != nil {
		return refuse(err)
	}

	// Checked; now in force. Settings first: a lower threshold applies to
	// the next SYN.
	if err := d.setSettings(next.settings()); err != nil {
		return refuse(err)
	}
	d.state.SetEscalation(next.Escalation, next.BlockDuration)
	if err := d.state.SetPolicy(next.Rules, fixed); err != nil {
		d.log.Error("reload: the allowlist could not be written whole", "err", err)
	}
	added, removed, err := d.state.ReplaceLists(lists)
	if err != nil {
		d.log.Error("reload: the lists could not be applied; the previous ones stay", "err", err)
	}
	d.conns.set(next.ConnLog)
	if later := restartOnly(d.cfg, next); len(later) > 0 {
		d.log.Warn("settings that take effect at the next start", "settings", later)
	}
	d.mu.Lock()
	// What a restart changes stays as the running daemon has it.
	keep := d.cfg
	d.cfg = next
	d.cfg.Ifaces, d.cfg.XDPMode, d.cfg.PinPath, d.cfg.StateDir = keep.Ifaces, keep.XDPMode, keep.PinPath, keep.StateDir
	d.cfg.Socket, d.cfg.MetricsAddr, d.cfg.LogFormat = keep.Socket, keep.MetricsAddr, keep.LogFormat
	d.cfg.Timeout, d.cfg.DetachOnExit, d.cfg.Replace = keep.Timeout, keep.DetachOnExit, keep.Replace
	d.cfg.Stdout, d.cfg.Logger, d.cfg.Reload = keep.Stdout, keep.Logger, keep.Reload
	d.mu.Unlock()
	d.log.Info("configuration reloaded", "by", by, "file", next.ConfigFile, "lists", len(lists),
		"list_entries_added", added, "list_entries_removed", removed)
	return nil
}

func (d *daemon) listByID(id string) *listSource {
	for _, l := range d.state.Lists() {
		if l.spec.id() == id {
			return l
		}
	}
	return nil
}

// watchLists re-reads the list files that changed since they were read,
// and the feeds due for a refresh: an edit applies without a restart, a bad
// edit keeps the version in force.
func (d *daemon) watchLists(st *store.Store) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	lists := d.state.Lists()
	var ld *loader
	changed := false
	for i, src := range lists {
		if src.spec.feed {
			if time.Since(src.checked) < cfg.FeedRefresh {
				continue
			}
		} else if now, err := stampOf(src.spec.where); (err == nil && now == src.stamp) || (err != nil && src.degraded != "") {
			continue // unchanged, or its loss already reported
		}
		if ld == nil {
			fixed := fixedAllows(cfg, d.hostSnapshot())
			l := newLoader(cfg, st, d.state.Checker(cfg.Rules, fixed), d.log)
			ld = &l
		}
		next, save, err := ld.load(src.spec, src)
		if err != nil {
			continue // cannot happen with a version in force
		}
		if save != nil {
			go save()
		}
		changed = changed || next.list != src.list
		lists[i] = next
	}
	if ld == nil {
		return
	}
	if !changed {
		d.state.SetLists(lists) // statuses and stamps only
		return
	}
	added, removed, err := d.state.ReplaceLists(lists)
	if err != nil {
		d.log.Error("a changed list could not be applied; the previous version stays", "err", err)
		return
	}
	d.log.Info("lists changed", "added", added, "removed", removed)
}
