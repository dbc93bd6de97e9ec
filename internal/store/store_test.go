package store

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

func mustOpen(t *testing.T, dir string) (*Store, Recovery) {
	t.Helper()
	s, rec, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, rec
}

var (
	at    = time.Date(2026, 11, 27, 15, 28, 5, 0, time.UTC)
	block = Block{Prefix: netip.MustParsePrefix("192.0.2.66/32"), Origin: OriginScan, Reason: "port scan", By: "kernel",
		Created: at, Expires: at.Add(time.Hour), Ports: []PortSeen{{Port: 22, Seen: at}, {Port: 80, Seen: at}}}
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, rec := mustOpen(t, dir)
	if rec.Found != "" {
		t.Fatalf("a new store reported %v", rec)
	}
	manual := Block{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Origin: OriginManual, Reason: "abuse", By: "uid 0", Created: at}
	if err := s.PutBlocks(block, manual); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAllows(Allow{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Origin: OriginManual, Created: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.Record(Change{Time: at, Action: "block", Prefix: block.Prefix, Origin: OriginScan}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, _ = mustOpen(t, dir)
	blocks, err := s.Blocks()
	if err != nil || len(blocks) != 2 {
		t.Fatalf("blocks %v, %v", blocks, err)
	}
	for _, b := range blocks {
		if b.Prefix == block.Prefix && (len(b.Ports) != 2 || !b.Expires.Equal(block.Expires) || b.Origin != OriginScan) {
			t.Errorf("scan block came back as %+v", b)
		}
		if b.Prefix == manual.Prefix && (!b.Expires.IsZero() || b.Reason != "abuse") {
			t.Errorf("manual block came back as %+v", b)
		}
	}
	if ok, err := s.DeleteBlock(OriginManual, manual.Prefix); !ok || err != nil {
		t.Errorf("delete: %v %v", ok, err)
	}
	if ok, _ := s.DeleteBlock(OriginManual, manual.Prefix); ok {
		t.Error("deleted twice")
	}
	allows, _ := s.Allows()
	hist, _ := s.History(10)
	if len(allows) != 1 || len(hist) != 1 || hist[0].Action != "block" {
		t.Errorf("allows %v, history %v", allows, hist)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	s, _ := mustOpen(t, t.TempDir())
	batch := make([]Change, historyMax+50)
	for i := range batch {
		batch[i] = Change{Time: at.Add(time.Duration(i) * time.Second), Action: "block"}
	}
	if err := s.Record(batch...); err != nil {
		t.Fatal(err)
	}
	hist, err := s.History(historyMax + 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != historyMax || !hist[len(hist)-1].Time.Equal(batch[len(batch)-1].Time) || !hist[0].Time.Equal(batch[50].Time) {
		t.Errorf("history holds %d, from %v to %v", len(hist), hist[0].Time, hist[len(hist)-1].Time)
	}
}

func TestSourcesKeepTheirLastGoodCopy(t *testing.T) {
	s, _ := mustOpen(t, t.TempDir())
	path := filepath.Join(t.TempDir(), "list")
	first := []byte("192.0.2.7\n198.51.100.0/24\n")
	os.WriteFile(path, first, 0o600)
	if err := s.SaveSource(Source{ID: "file:" + path, Location: path, Entries: 2}, path, sha256.Sum256(first)); err != nil {
		t.Fatal(err)
	}
	second := []byte("192.0.2.8\n")
	os.WriteFile(path, second, 0o600)
	if err := s.SaveSource(Source{ID: "file:" + path, Location: path, Entries: 1}, path, sha256.Sum256(second)); err != nil {
		t.Fatal(err)
	}
	// Changed again after it parsed: no copy of content that did not parse.
	os.WriteFile(path, []byte("garbage\n"), 0o600)
	if err := s.SaveSource(Source{ID: "file:" + path, Location: path, Entries: 1}, path, sha256.Sum256([]byte("192.0.2.9\n"))); err == nil {
		t.Error("a copy of changed content was kept")
	}
	f, src, err := s.LastGoodCopy("file:" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, second) || src.Entries != 1 {
		t.Errorf("last good copy %q (%d entries), want the second", got, src.Entries)
	}
	copies, _ := os.ReadDir(filepath.Join(s.dir, "sources"))
	if len(copies) != 1 {
		t.Errorf("%d copies kept, want only the latest", len(copies))
	}
}

// damage writes a good store with a backup, then breaks the store file.
func damage(t *testing.T, breakIt func(path string)) (string, Recovery) {
	t.Helper()
	dir := t.TempDir()
	s, _, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutBlocks(block); err != nil {
		t.Fatal(err)
	}
	if err := s.Backup(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	breakIt(filepath.Join(dir, fileName))
	s2, rec, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	blocks, _ := s2.Blocks()
	s2.Close()
	if !rec.Empty && len(blocks) != 1 {
		t.Errorf("recovered store holds %d blocks, want the backup's 1", len(blocks))
	}
	return dir, rec
}

func TestDamagedStoreIsRestoredFromBackup(t *testing.T) {
	for name, breakIt := range map[string]func(string){
		"zero-length": func(p string) { os.Truncate(p, 0) },
		"truncated":   func(p string) { os.Truncate(p, 4096) },
		"garbage": func(p string) {
			os.WriteFile(p, bytes.Repeat([]byte("not a database "), 2000), 0o600)
		},
		"overwritten pages": func(p string) {
			f, _ := os.OpenFile(p, os.O_WRONLY, 0)
			f.WriteAt(bytes.Repeat([]byte{0xff}, 8192), 8192)
			f.Close()
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir, rec := damage(t, breakIt)
			if rec.Found == "" || rec.Empty || !strings.Contains(rec.Did, "restored the backup") {
				t.Errorf("recovery %+v, want the backup restored", rec)
			}
			aside, _ := filepath.Glob(filepath.Join(dir, fileName+".damaged-*"))
			if len(aside) != 1 {
				t.Errorf("the damaged file was not kept aside: %v", aside)
			}
		})
	}
}

func TestDamagedStoreWithoutBackupStartsEmptyAndSaysSo(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, fileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, rec := mustOpen(t, dir)
	if !rec.Empty || !strings.Contains(rec.Found, "zero-length store") || !strings.Contains(rec.Did, "started an empty store") {
		t.Errorf("recovery %+v", rec)
	}
	if blocks, _ := s.Blocks(); len(blocks) != 0 {
		t.Errorf("empty store holds %v", blocks)
	}
}

func TestUnwritableStateFolderIsRefused(t *testing.T) {
	testenv.RequirePrivileged(t) // root ignores modes: a read-only mount it is
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, 0)
	_, _, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), "is not writable") {
		t.Errorf("read-only state folder: %v", err)
	}
}

func TestStrikes(t *testing.T) {
	s, _ := mustOpen(t, t.TempDir())
	src := netip.MustParseAddr("192.0.2.66")
	step := func(at time.Time, want int) {
		t.Helper()
		if n, err := s.Strike(src, at, 30*24*time.Hour); n != want || err != nil {
			t.Errorf("strike at %v: %d %v, want %d", at, n, err, want)
		}
	}
	step(at, 1)
	step(at, 1) // the same block, seen twice
	step(at.Add(2*time.Hour), 2)
	step(at.Add(48*time.Hour), 3)
	step(at.Add(48*time.Hour+31*24*time.Hour), 1) // quiet for longer than forget
	if n, _ := s.Strike(netip.MustParseAddr("192.0.2.67"), at, time.Hour); n != 1 {
		t.Errorf("another source starts at %d", n)
	}
}

func TestReplaceBlocks(t *testing.T) {
	s, _ := mustOpen(t, t.TempDir())
	p := block.Prefix
	manual := Block{Prefix: p, Origin: OriginManual, Reason: "abuse", Created: at}
	other := Block{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Origin: OriginManual, Created: at}
	if err := s.PutBlocks(block, other); err != nil {
		t.Fatal(err)
	}
	// The scan record of p goes, a manual one comes, another prefix's stays.
	if err := s.ReplaceBlocks(p, []Origin{OriginScan, OriginManual}, manual); err != nil {
		t.Fatal(err)
	}
	blocks, _ := s.Blocks()
	if len(blocks) != 2 || blocks[0].Origin != OriginManual || blocks[1].Origin != OriginManual {
		t.Errorf("after the replace: %+v", blocks)
	}
	// A record of another prefix is refused, and the transaction with it.
	if err := s.ReplaceBlocks(p, []Origin{OriginManual}, other); err == nil {
		t.Error("a record of another prefix was taken")
	}
	if blocks, _ := s.Blocks(); len(blocks) != 2 {
		t.Errorf("a refused replace changed the records: %+v", blocks)
	}
}

func TestMembersAreKeptAsLastSeen(t *testing.T) {
	st, _, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got, err := st.Members(); err != nil || len(got) != 0 {
		t.Fatalf("members before any were seen: %v %v", got, err)
	}
	b := []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::2")}
	if err := st.SaveMembers(map[string][]netip.Addr{"a": nil, "b": b}); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveMembers(map[string][]netip.Addr{"b": b}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Members()
	if err != nil || len(got) != 1 || !slices.Equal(got["b"], b) {
		t.Errorf("members %v %v: want b alone, with its addresses", got, err)
	}
}
