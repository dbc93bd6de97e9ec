package daemon

import (
	"errors"
	"fmt"

	"github.com/hbf-firewall/hbf/internal/decision"
	"github.com/hbf-firewall/hbf/internal/sources"
)

// reload re-reads the configuration and every list, and reopens the log
// file. A configuration that does not parse or check, or a list it newly
// names that does not, refuses the reload whole: the running one stays. A
// list hbf already has that no longer parses keeps the version in force.
func (d *daemon) reload(by string) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	refuse := func(err error) error {
		d.log.Error("reload refused: the running configuration stays", "by", by, "err", err)
		return fmt.Errorf("reload refused, the running configuration stays: %w", err)
	}
	if d.deps.Reload == nil {
		return refuse(errors.New("this daemon was started without a way to re-read its configuration"))
	}
	next, err := d.deps.Reload()
	if err != nil {
		return refuse(err)
	}
	set := next.Settings
	base := d.protectedBase(set, d.hostSnapshot())
	ld := d.loader(d.state.Checker(set.Rules, base))
	var lists []*sources.Source
	for _, spec := range specsOf(set) {
		src, save, err := ld.Load(spec, d.listByID(spec.ID()))
		if err != nil {
			return refuse(fmt.Errorf("list %w", err))
		}
		lists = append(lists, src)
		if save != nil {
			d.wg.Go(save)
		}
	}
	if err := decision.ListsFit(lists, d.k.Capacity()); err != nil {
		return refuse(explain(err))
	}
	if err := d.out.reopen(set.LogFile); err != nil {
		return refuse(err)
	}

	// Checked; now in force. Settings first: a lower threshold applies to
	// the next SYN.
	if err := d.setProgram(set.program(d.ephemeralPorts())); err != nil {
		return refuse(err)
	}
	d.state.SetEscalation(set.Escalation, set.BlockDuration)
	if err := d.state.SetPolicy(set.Rules, base); err != nil {
		d.log.Error("reload: the allowlist could not be written whole", "err", err)
	}
	added, removed, err := d.state.ReplaceLists(lists)
	if err != nil {
		d.log.Error("reload: the lists could not be applied; the previous ones stay", "err", err)
	}
	d.conns.set(set.ConnLog)
	if later := restartOnly(d.start, next.Start); len(later) > 0 {
		d.log.Warn("settings that take effect at the next start", "settings", later)
	}
	d.mu.Lock()
	d.live = set
	d.mu.Unlock()
	d.log.Info("configuration reloaded", "by", by, "file", set.ConfigFile, "lists", len(lists),
		"list_entries_added", added, "list_entries_removed", removed)
	return nil
}

func (d *daemon) listByID(id string) *sources.Source {
	for _, l := range d.state.Lists() {
		if l.Spec.ID() == id {
			return l
		}
	}
	return nil
}

// watchLists re-reads the list files that changed since they were read,
// and the feeds due for a refresh: an edit applies without a restart, a bad
// edit keeps the version in force.
func (d *daemon) watchLists() {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	set := d.settings()
	lists := d.state.Lists()
	var ld *sources.Loader
	changed := false
	for i, src := range lists {
		if !src.Due(set.FeedRefresh) {
			continue
		}
		if ld == nil {
			l := d.loader(d.state.Checker(set.Rules, d.protectedBase(set, d.hostSnapshot())))
			ld = &l
		}
		next, save, err := ld.Load(src.Spec, src)
		if err != nil {
			continue // cannot happen with a version in force
		}
		if save != nil {
			d.wg.Go(save)
		}
		changed = changed || next.List != src.List
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
	if _, tooBig := errors.AsType[*decision.ListsTooBigError](err); tooBig {
		// The lists that grew keep their version in force, and say why.
		prev := d.state.Lists()
		for i, l := range lists {
			if i < len(prev) && l.List != prev[i].List {
				lists[i] = prev[i].Kept(l, err)
			}
		}
		d.state.SetLists(lists)
		d.log.Error("a list grew past the block maps' room; the version in force stays", "err", err)
		return
	}
	if err != nil {
		d.log.Error("a changed list could not be applied; the previous version stays", "err", err)
		return
	}
	d.log.Info("lists changed", "added", added, "removed", removed)
}
