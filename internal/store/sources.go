package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The last good copy of each source is a file of its own under
// <state>/sources, named by content hash: a million-line list is copied by
// streaming, never held in a database transaction.
func (s *Store) copyPath(sum string) string { return filepath.Join(s.dir, "sources", sum+".list") }

// SaveSource records that src parsed, with content as its last good copy.
// The copy is written only when the content changed.
func (s *Store) SaveSource(id, location string, content io.ReaderAt, size int64, entries int) error {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(content, 0, size)); err != nil {
		return err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	path := s.copyPath(sum)
	if _, err := os.Stat(path); err != nil {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		tmp := path + ".tmp"
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, io.NewSectionReader(content, 0, size))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, path)
		}
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("save the last good copy of %s: %w", location, err)
		}
	}
	var old Source
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSources)
		if v := b.Get([]byte(id)); v != nil {
			_ = json.Unmarshal(v, &old)
		}
		return put(tx, bucketSources, []byte(id), Source{ID: id, Location: location, Loaded: time.Now(), SHA256: sum, Entries: entries})
	})
	if err != nil {
		return err
	}
	if old.SHA256 != "" && old.SHA256 != sum {
		os.Remove(s.copyPath(old.SHA256))
	}
	return nil
}

// LastGoodCopy opens the last content of source id that parsed.
func (s *Store) LastGoodCopy(id string) (*os.File, Source, error) {
	var src Source
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSources).Get([]byte(id))
		if v == nil {
			return os.ErrNotExist
		}
		return json.Unmarshal(v, &src)
	})
	if err != nil {
		return nil, src, err
	}
	f, err := os.Open(s.copyPath(src.SHA256))
	return f, src, err
}
