package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/hbf-firewall/hbf/internal/policy"
	"github.com/hbf-firewall/hbf/internal/sources"
	"github.com/hbf-firewall/hbf/internal/store"
)

// maxFeed bounds what hbf downloads from a feed.
const maxFeed = 256 << 20

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

// checker is the policy check for blocks of p: the rules, and what is
// protected now. A block too wide names the setting that says how wide.
func checker(rules policy.Rules, protected []policy.Protected) func(netip.Prefix) error {
	return func(p netip.Prefix) error {
		err := rules.CheckBlock(p, protected)
		if wide, ok := errors.AsType[*policy.TooWideError](err); ok && wide.MinBits > 0 {
			v := "4"
			if wide.Prefix.Addr().Is6() {
				v = "6"
			}
			return fmt.Errorf("%w (--min-prefix-v%s)", err, v)
		}
		return err
	}
}

// sourceSpec names a list: a file or a feed.
type sourceSpec struct {
	where string // a path or a URL
	feed  bool
}

func (s sourceSpec) id() string {
	if s.feed {
		return "url:" + s.where
	}
	return "file:" + s.where
}

func specsOf(set Settings) []sourceSpec {
	var out []sourceSpec
	for _, p := range set.Blocklists {
		out = append(out, sourceSpec{where: p})
	}
	for _, u := range set.BlocklistURLs {
		out = append(out, sourceSpec{where: u, feed: true})
	}
	return out
}

// loader reads lists.
type loader struct {
	st      *store.Store
	check   func(netip.Prefix) error
	log     *slog.Logger
	http    *http.Client
	tmpDir  string // where a feed lands before it is parsed
	version string
}

// newLoader reads lists with check; feeds land in tmpDir before they parse.
func newLoader(tmpDir, version string, st *store.Store, check func(netip.Prefix) error, log *slog.Logger) loader {
	return loader{st: st, check: check, log: log, http: &http.Client{Timeout: 30 * time.Second},
		tmpDir: tmpDir, version: version}
}

func (d *daemon) loader(check func(netip.Prefix) error) loader {
	return newLoader(d.start.StateDir, d.deps.Version, d.st, check, d.log)
}

// listsRead is what reading the lists at start found.
type listsRead struct {
	lists      []*listSource
	saveCopies []func() // keep the last good copies; not on the way to protection
	err        error
}

// readAll reads every list at start. A list that does not parse is
// replaced by its last good copy when hbf has one, with a warning; a list
// hbf has never loaded that does not parse stops the start, before anything
// is attached. A feed hbf cannot reach starts empty, degraded, and is
// fetched again at the next refresh.
func (l loader) readAll(specs []sourceSpec) listsRead {
	var out listsRead
	for _, spec := range specs {
		src, save, err := l.load(spec, nil)
		if err != nil {
			flag := "--blocklist"
			if spec.feed {
				flag = "--blocklist-url"
			}
			return listsRead{err: fmt.Errorf("%s %w", flag, err)}
		}
		out.lists = append(out.lists, src)
		if save != nil {
			out.saveCopies = append(out.saveCopies, save)
		}
	}
	return out
}

// load reads a list. When it does not read or parse, prev (what is in
// force) stays, or else its last good copy; either way marked degraded.
// With neither, it is an error — but for a feed that did not answer, which
// starts empty.
func (l loader) load(spec sourceSpec, prev *listSource) (*listSource, func(), error) {
	if spec.feed {
		return l.loadFeed(spec, prev)
	}
	path := spec.where
	stampNow, _ := stampOf(path)
	f, err := sources.ReadFile(path, l.check)
	if err != nil {
		src, _, ferr := l.fallback(spec, prev, err, false)
		if src != nil {
			src.stamp = stampNow
		}
		return src, nil, ferr
	}
	warnSkipped(l.log, path, f.Skipped)
	l.log.Info("blocklist loaded", "file", path, "entries", f.List.Len())
	src := &listSource{spec: spec, list: f.List, stamp: stampNow, loaded: time.Now()}
	save := func() {
		meta := store.Source{ID: spec.id(), Location: path, Entries: f.List.Len()}
		if err := l.st.SaveSource(meta, path, f.SHA256); err != nil {
			l.log.Warn("cannot keep a copy of the blocklist", "file", path, "err", err)
		}
	}
	return src, save, nil
}

// loadFeed fetches a feed, conditionally: an unchanged feed answers 304
// and costs nothing.
func (l loader) loadFeed(spec sourceSpec, prev *listSource) (*listSource, func(), error) {
	url := spec.where
	var etag, modified string
	if prev != nil {
		etag, modified = prev.etag, prev.lastModified
	} else if saved, ok := l.savedSource(spec.id()); ok {
		etag, modified = saved.ETag, saved.LastModified
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", url, err)
	}
	req.Header.Set("User-Agent", "hbf/"+l.version)
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	if modified != "" {
		req.Header.Set("If-Modified-Since", modified)
	}
	resp, err := l.http.Do(req)
	if err != nil {
		return l.fallback(spec, prev, fmt.Errorf("%s: %w", url, err), true)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && prev != nil:
		kept := *prev
		kept.degraded, kept.checked = "", time.Now()
		return &kept, nil, nil
	case resp.StatusCode == http.StatusNotModified:
		// Unchanged since the copy hbf keeps: that copy is the feed.
		src, err := l.fromCopy(spec)
		if err != nil {
			return nil, nil, fmt.Errorf("%s answered 304 but the copy hbf keeps is unusable: %w", url, err)
		}
		src.etag, src.lastModified = etag, modified
		return src, nil, nil
	case resp.StatusCode != http.StatusOK:
		return l.fallback(spec, prev, fmt.Errorf("%s: %s", url, resp.Status), true)
	}

	tmp, err := os.CreateTemp(l.tmpDir, "feed-*.tmp")
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, io.LimitReader(resp.Body, maxFeed+1))
	tmp.Close()
	if err == nil && n > maxFeed {
		err = fmt.Errorf("larger than %d MiB", maxFeed>>20)
	}
	if err != nil {
		return l.fallback(spec, prev, fmt.Errorf("%s: %w", url, err), true)
	}
	f, err := sources.ReadFile(tmp.Name(), l.check)
	if err != nil {
		// The file's name means nothing to anyone: name the URL.
		var perr error = err
		if msg, ok := strings.CutPrefix(err.Error(), tmp.Name()+" "); ok {
			perr = fmt.Errorf("%s %s", url, msg)
		}
		return l.fallback(spec, prev, perr, false)
	}
	warnSkipped(l.log, url, f.Skipped)
	l.log.Info("blocklist feed loaded", "url", url, "entries", f.List.Len())
	src := &listSource{spec: spec, list: f.List, loaded: time.Now(), checked: time.Now(),
		etag: resp.Header.Get("ETag"), lastModified: resp.Header.Get("Last-Modified")}
	// Copied now, while the download is still there.
	meta := store.Source{ID: spec.id(), Location: url, Entries: f.List.Len(), ETag: src.etag, LastModified: src.lastModified}
	if err := l.st.SaveSource(meta, tmp.Name(), f.SHA256); err != nil {
		l.log.Warn("cannot keep a copy of the feed", "url", url, "err", err)
	}
	return src, nil, nil
}

func (l loader) savedSource(id string) (store.Source, bool) {
	f, src, err := l.st.LastGoodCopy(id)
	if err != nil {
		return store.Source{}, false
	}
	f.Close()
	return src, true
}

// fromCopy parses the last good copy of a source.
func (l loader) fromCopy(spec sourceSpec) (*listSource, error) {
	f, saved, err := l.st.LastGoodCopy(spec.id())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	list, skipped, err := sources.ParseList(f, l.check)
	if err != nil {
		return nil, err
	}
	warnSkipped(l.log, spec.where, skipped)
	return &listSource{spec: spec, list: list, loaded: saved.Loaded, checked: time.Now(),
		etag: saved.ETag, lastModified: saved.LastModified}, nil
}

// fallback stands in for a list that could not be read: the version in
// force, else the last good copy, else (unreachable feeds only) nothing.
func (l loader) fallback(spec sourceSpec, prev *listSource, err error, unreachable bool) (*listSource, func(), error) {
	if prev != nil {
		l.log.Warn("blocklist refused: the version in force stays", "list", spec.where, "err", err, "entries", prev.list.Len())
		kept := *prev
		kept.checked = time.Now()
		kept.degraded = fmt.Sprintf("degraded: %v; the version read %s stays in force", err, prev.loaded.Format(time.RFC3339))
		return &kept, nil, nil
	}
	src, cerr := l.fromCopy(spec)
	if cerr == nil {
		l.log.Warn("blocklist refused: using its last good copy", "list", spec.where, "err", err,
			"copy_from", src.loaded.Format(time.RFC3339), "entries", src.list.Len())
		src.degraded = fmt.Sprintf("degraded: %v; its last good copy, read %s, is in use", err, src.loaded.Format(time.RFC3339))
		return src, nil, nil
	}
	if unreachable && spec.feed {
		l.log.Warn("blocklist feed unreachable and never loaded: it starts empty", "url", spec.where, "err", err)
		empty, _, _ := sources.ParseList(eofReader{}, nil)
		return &listSource{spec: spec, list: empty, checked: time.Now(),
			degraded: fmt.Sprintf("degraded: %v; never loaded", err)}, nil, nil
	}
	return nil, nil, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

func warnSkipped(log *slog.Logger, where string, skipped []sources.Skipped) {
	if len(skipped) > 0 {
		log.Warn("blocklist entries refused by policy, skipped", "list", where, "count", len(skipped),
			"entries", sources.SkippedText(where, skipped))
	}
}

// CheckLists reads every list file a configuration names, for hbf config
// check: a list that does not read or parse is an error naming file, line
// and value. Feeds are not fetched.
func CheckLists(set Settings) error {
	var errs []error
	for _, path := range set.Blocklists {
		if _, err := sources.ReadFile(path, nil); err != nil {
			errs = append(errs, fmt.Errorf("blocklist %w", err))
		}
	}
	return errors.Join(errs...)
}
