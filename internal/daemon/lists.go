package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/sources"
	"github.com/hbf-firewall/hbf/internal/store"
)

// stamp tells whether a file changed: editors replace files (a new inode)
// as often as they rewrite them.
type stamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func stampOf(path string) (stamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	return stamp{size: st.Size(), mtime: st.ModTime(), ino: ino}, nil
}

func checker(rules policy.Rules, protected []policy.Protected) func(netip.Prefix) error {
	return func(p netip.Prefix) error { return rules.CheckBlock(p, protected) }
}

// listsRead is what reading the lists at start found.
type listsRead struct {
	lists      []*listSource
	saveCopies []func() // keep the last good copies; not on the way to protection
	err        error
}

// readLists reads the list files at start. A file that does not parse is
// replaced by its last good copy when hbf has one, with a warning; a list
// hbf has never loaded that does not parse stops the start, before
// anything is attached.
func readLists(paths []string, st *store.Store, check func(netip.Prefix) error, log *slog.Logger) listsRead {
	var out listsRead
	for _, path := range paths {
		src, save, err := loadList(path, st, check, nil, log)
		if err != nil {
			return listsRead{err: fmt.Errorf("--blocklist: %w", err)}
		}
		out.lists = append(out.lists, src)
		if save != nil {
			out.saveCopies = append(out.saveCopies, save)
		}
	}
	return out
}

// loadList reads the list file at path. When it does not read or parse,
// prev (what is in force) stays, or else its last good copy; either way the
// source is marked degraded. With neither, it is an error.
func loadList(path string, st *store.Store, check func(netip.Prefix) error, prev *listSource,
	log *slog.Logger) (*listSource, func(), error) {
	id := "file:" + path
	stampNow, _ := stampOf(path)
	f, err := sources.ReadFile(path, check)
	if err == nil {
		warnSkipped(log, path, f.Skipped)
		log.Info("blocklist loaded", "file", path, "entries", f.List.Len())
		src := &listSource{id: id, path: path, list: f.List, stamp: stampNow, loaded: time.Now()}
		save := func() {
			if err := st.SaveSource(id, path, f.SHA256, f.List.Len()); err != nil {
				log.Warn("cannot keep a copy of the blocklist", "file", path, "err", err)
			}
		}
		return src, save, nil
	}
	if prev != nil {
		degraded := fmt.Sprintf("degraded: %v; the version read %s stays in force", err, prev.loaded.Format(time.RFC3339))
		log.Warn("blocklist refused: the version in force stays", "file", path, "err", err, "entries", prev.list.Len())
		kept := *prev
		kept.stamp, kept.degraded = stampNow, degraded
		return &kept, nil, nil
	}
	copyFile, saved, cerr := st.LastGoodCopy(id)
	if cerr != nil {
		return nil, nil, err
	}
	defer copyFile.Close()
	list, skipped, perr := sources.ParseList(copyFile, check)
	if perr != nil {
		return nil, nil, fmt.Errorf("%w; and its last good copy does not parse: %v", err, perr)
	}
	log.Warn("blocklist refused: using its last good copy", "file", path, "err", err,
		"copy_from", saved.Loaded.Format(time.RFC3339), "entries", list.Len())
	degraded := fmt.Sprintf("degraded: %v; its last good copy, read %s, is in use", err, saved.Loaded.Format(time.RFC3339))
	warnSkipped(log, path, skipped)
	return &listSource{id: id, path: path, list: list, stamp: stampNow, loaded: saved.Loaded, degraded: degraded}, nil, nil
}

func warnSkipped(log *slog.Logger, path string, skipped []sources.Skipped) {
	if len(skipped) > 0 {
		log.Warn("blocklist entries refused by policy, skipped", "file", path, "count", len(skipped),
			"entries", sources.SkippedText(path, skipped))
	}
}

// CheckLists reads every list a configuration names, for hbf config check:
// a list that does not read or parse is an error naming file, line, value.
func CheckLists(cfg Config) error {
	var errs []error
	for _, path := range cfg.Blocklists {
		if _, err := sources.ReadFile(path, nil); err != nil {
			errs = append(errs, fmt.Errorf("blocklist %w", err))
		}
	}
	return errors.Join(errs...)
}
