package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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

// SaveSource records that src's content, now in the file at path, parsed,
// and keeps a copy of it as its last good copy. sum is the hash of the
// content that parsed: the copy is kept only if it is still that content
// (the file may have changed since), and written only when it differs from
// the previous copy. src.Loaded and src.SHA256 are set here.
func (s *Store) SaveSource(src Source, path string, sum [sha256.Size]byte) error {
	hexSum := hex.EncodeToString(sum[:])
	dst := s.copyPath(hexSum)
	if _, err := os.Stat(dst); err != nil {
		if err := copyChecked(path, dst, sum); err != nil {
			return fmt.Errorf("keep a copy of %s: %w", path, err)
		}
	}
	src.Loaded, src.SHA256 = time.Now(), hexSum
	var old Source
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSources)
		if v := b.Get([]byte(src.ID)); v != nil {
			_ = json.Unmarshal(v, &old)
		}
		return put(tx, bucketSources, []byte(src.ID), src)
	})
	if err != nil {
		return err
	}
	if old.SHA256 != "" && old.SHA256 != hexSum {
		os.Remove(s.copyPath(old.SHA256))
	}
	return nil
}

// copyChecked copies from to dst, atomically, if its content hashes to sum.
func copyChecked(from, dst string, sum [sha256.Size]byte) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && !bytes.Equal(h.Sum(nil), sum[:]) {
		err = errors.New("the file changed while hbf read it; the copy waits for the next read")
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
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
