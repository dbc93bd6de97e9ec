package sources

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/hbf-firewall/hbf/internal/store"
)

// maxFeed bounds what hbf downloads from a feed.
const maxFeed = 256 << 20

// Spec names a list: a file or a feed.
type Spec struct {
	Where string // a path or a URL
	Feed  bool
}

// ID is the spec's key among the copies the store keeps.
func (s Spec) ID() string {
	if s.Feed {
		return "url:" + s.Where
	}
	return "file:" + s.Where
}

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

// Source is a list as hbf holds it: its entries, and how and when they
// were read. A Source is replaced whole, never changed in place, so
// readers may use it without a lock.
type Source struct {
	Spec     Spec
	List     *List
	Loaded   time.Time // when List was read
	Degraded string    // why List is not the source's content now, or ""

	stamp   stamp     // a file's, when read: to notice edits
	checked time.Time // a feed's last fetch
	// A feed's validators, for a conditional GET.
	etag, lastModified string
}

// Due says whether the source is to be read again: a file that changed
// since it was read (but one whose loss is reported already), a feed
// fetched longer than refresh ago.
func (s *Source) Due(refresh time.Duration) bool {
	if s.Spec.Feed {
		return time.Since(s.checked) >= refresh
	}
	now, err := stampOf(s.Spec.Where)
	return !(err == nil && now == s.stamp) && !(err != nil && s.Degraded != "")
}

// Kept is s, the version in force, kept instead of read, a version read
// since that cannot be put in force, for why: it is read again only once
// it changes again.
func (s *Source) Kept(read *Source, why error) *Source {
	kept := *s
	kept.Degraded = fmt.Sprintf("degraded: %v; the version read %s stays in force", why, s.Loaded.Format(time.RFC3339))
	kept.stamp, kept.checked = read.stamp, read.checked
	return &kept
}

// Loader reads lists: files, and feeds over HTTP, keeping the last good
// copy of each in the store.
type Loader struct {
	st      *store.Store
	check   func(netip.Prefix) error
	log     *slog.Logger
	http    *http.Client
	tmpDir  string // where a feed lands before it is parsed
	version string
}

// NewLoader reads lists with check, the policy for their entries; feeds
// land in tmpDir before they parse, and say they come from hbf/version.
func NewLoader(tmpDir, version string, st *store.Store, check func(netip.Prefix) error, log *slog.Logger) Loader {
	return Loader{st: st, check: check, log: log, http: &http.Client{Timeout: 30 * time.Second},
		tmpDir: tmpDir, version: version}
}

// Load reads a list. When it does not read or parse, prev (what is in
// force) stays, or else its last good copy; either way marked degraded.
// With neither, it is an error — but for a feed that did not answer, which
// starts empty. save, when not nil, keeps the copy of a file read: it is
// not on the way to protection, and may run later.
func (l Loader) Load(spec Spec, prev *Source) (src *Source, save func(), err error) {
	if spec.Feed {
		src, err := l.loadFeed(spec, prev)
		return src, nil, err
	}
	path := spec.Where
	stampNow, _ := stampOf(path)
	f, err := ReadFile(path, l.check)
	if err != nil {
		src, ferr := l.fallback(spec, prev, err, false)
		if src != nil {
			src.stamp = stampNow
		}
		return src, nil, ferr
	}
	l.warnSkipped(path, f.Skipped)
	l.log.Info("blocklist loaded", "file", path, "entries", f.List.Len())
	src = &Source{Spec: spec, List: f.List, stamp: stampNow, Loaded: time.Now()}
	save = func() {
		meta := store.Source{ID: spec.ID(), Location: path, Entries: f.List.Len()}
		if err := l.st.SaveSource(meta, path, f.SHA256); err != nil {
			l.log.Warn("cannot keep a copy of the blocklist", "file", path, "err", err)
		}
	}
	return src, save, nil
}

// loadFeed fetches a feed, conditionally: an unchanged feed answers 304
// and costs nothing.
func (l Loader) loadFeed(spec Spec, prev *Source) (*Source, error) {
	url := spec.Where
	var etag, modified string
	if prev != nil {
		etag, modified = prev.etag, prev.lastModified
	} else if saved, ok := l.savedSource(spec.ID()); ok {
		etag, modified = saved.ETag, saved.LastModified
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
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
		kept.Degraded, kept.checked = "", time.Now()
		return &kept, nil
	case resp.StatusCode == http.StatusNotModified:
		// Unchanged since the copy hbf keeps: that copy is the feed.
		src, err := l.fromCopy(spec)
		if err != nil {
			return nil, fmt.Errorf("%s answered 304 but the copy hbf keeps is unusable: %w", url, err)
		}
		src.etag, src.lastModified = etag, modified
		return src, nil
	case resp.StatusCode != http.StatusOK:
		return l.fallback(spec, prev, fmt.Errorf("%s: %s", url, resp.Status), true)
	}

	tmp, err := os.CreateTemp(l.tmpDir, "feed-*.tmp")
	if err != nil {
		return nil, err
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
	f, err := ReadFile(tmp.Name(), l.check)
	if err != nil {
		// The file's name means nothing to anyone: name the URL.
		var perr error = err
		if msg, ok := strings.CutPrefix(err.Error(), tmp.Name()+" "); ok {
			perr = fmt.Errorf("%s %s", url, msg)
		}
		return l.fallback(spec, prev, perr, false)
	}
	l.warnSkipped(url, f.Skipped)
	l.log.Info("blocklist feed loaded", "url", url, "entries", f.List.Len())
	src := &Source{Spec: spec, List: f.List, Loaded: time.Now(), checked: time.Now(),
		etag: resp.Header.Get("ETag"), lastModified: resp.Header.Get("Last-Modified")}
	// Copied now, while the download is still there.
	meta := store.Source{ID: spec.ID(), Location: url, Entries: f.List.Len(), ETag: src.etag, LastModified: src.lastModified}
	if err := l.st.SaveSource(meta, tmp.Name(), f.SHA256); err != nil {
		l.log.Warn("cannot keep a copy of the feed", "url", url, "err", err)
	}
	return src, nil
}

func (l Loader) savedSource(id string) (store.Source, bool) {
	f, src, err := l.st.LastGoodCopy(id)
	if err != nil {
		return store.Source{}, false
	}
	f.Close()
	return src, true
}

// fromCopy parses the last good copy of a source.
func (l Loader) fromCopy(spec Spec) (*Source, error) {
	f, saved, err := l.st.LastGoodCopy(spec.ID())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	list, skipped, err := ParseList(f, l.check)
	if err != nil {
		return nil, err
	}
	l.warnSkipped(spec.Where, skipped)
	return &Source{Spec: spec, List: list, Loaded: saved.Loaded, checked: time.Now(),
		etag: saved.ETag, lastModified: saved.LastModified}, nil
}

// fallback stands in for a list that could not be read: the version in
// force, else the last good copy, else (unreachable feeds only) nothing.
func (l Loader) fallback(spec Spec, prev *Source, err error, unreachable bool) (*Source, error) {
	if prev != nil {
		l.log.Warn("blocklist refused: the version in force stays", "list", spec.Where, "err", err, "entries", prev.List.Len())
		kept := *prev
		kept.checked = time.Now()
		kept.Degraded = fmt.Sprintf("degraded: %v; the version read %s stays in force", err, prev.Loaded.Format(time.RFC3339))
		return &kept, nil
	}
	src, cerr := l.fromCopy(spec)
	if cerr == nil {
		l.log.Warn("blocklist refused: using its last good copy", "list", spec.Where, "err", err,
			"copy_from", src.Loaded.Format(time.RFC3339), "entries", src.List.Len())
		src.Degraded = fmt.Sprintf("degraded: %v; its last good copy, read %s, is in use", err, src.Loaded.Format(time.RFC3339))
		return src, nil
	}
	if unreachable && spec.Feed {
		l.log.Warn("blocklist feed unreachable and never loaded: it starts empty", "url", spec.Where, "err", err)
		return &Source{Spec: spec, List: &List{}, checked: time.Now(),
			Degraded: fmt.Sprintf("degraded: %v; never loaded", err)}, nil
	}
	return nil, err
}

func (l Loader) warnSkipped(where string, skipped []Skipped) {
	if len(skipped) > 0 {
		l.log.Warn("blocklist entries refused by policy, skipped", "list", where, "count", len(skipped),
			"entries", SkippedText(where, skipped))
	}
}
