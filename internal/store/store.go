// Package store keeps hbf's decisions across restarts and reboots: blocks
// and allows with their reasons and times, the sources lists came from (with
// their last good copy), and a bounded history of changes. It is an embedded
// bbolt database in the state folder, with a backup beside it.
//
// A store that is missing, zero-length, truncated or corrupt never makes hbf
// start as if nothing had been decided: Open says what it found and restores
// the backup, or hands back an empty store for the caller to rebuild from
// what the kernel still holds.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hbf-firewall/hbf/internal/ports"
)

const (
	fileName   = "hbf.db"
	backupName = "hbf.db.bak"
	schema     = "1"
	// historyMax bounds the history bucket.
	historyMax = 10000
)

var (
	bucketMeta    = []byte("meta")
	bucketBlocks  = []byte("blocks")
	bucketAllows  = []byte("allows")
	bucketSources = []byte("sources")
	bucketHistory = []byte("history")
	keySchema     = []byte("schema")
)

// Origin says where a block or allow comes from.
type Origin string

const (
	OriginManual Origin = "manual" // the CLI or API
	OriginScan   Origin = "scan"   // the XDP program, for a scan
	OriginLimit  Origin = "limit"  // the kernel, for a source over a connection limit
	OriginFile   Origin = "file"   // a blocklist file
	OriginKernel Origin = "kernel" // found in the kernel with no record: recovered
	// OriginFleetAllow: an allowlist entry of the fleet's, applied here.
	OriginFleetAllow Origin = "fleet"
)

// fleetOrigin begins the origin of a block another node of the fleet made.
const fleetOrigin = "fleet:"

// OriginFleet is the origin of the blocks node published to the fleet.
func OriginFleet(node string) Origin { return Origin(fleetOrigin + node) }

// FleetNode is the node of a fleet origin, or "" for another origin.
func (o Origin) FleetNode() string { return o.after(fleetOrigin) }

// after is what follows prefix in o, or "" when o does not begin with it.
func (o Origin) after(prefix string) string {
	rest, ok := strings.CutPrefix(string(o), prefix)
	if !ok {
		return ""
	}
	return rest
}

// fail2banOrigin begins the origin of the blocks a fail2ban jail made
// through hbf.
const fail2banOrigin = "fail2ban:"

// ParseCallerOrigin reads the origin a caller of the API names for its
// blocks: manual (or nothing), or fail2ban:<jail>, a jail named by
// letters, digits, '.', '-' and '_'. The daemon's own origins (scan, file,
// fleet:<node>) are never a caller's.
func ParseCallerOrigin(s string) (Origin, error) {
	if s == "" || s == string(OriginManual) {
		return OriginManual, nil
	}
	jail, ok := strings.CutPrefix(s, fail2banOrigin)
	if !ok {
		return "", fmt.Errorf("origin %q: a caller's blocks are manual or fail2ban:<jail>", s)
	}
	if jail == "" || len(jail) > 64 || strings.IndexFunc(jail, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_')
	}) >= 0 {
		return "", fmt.Errorf("origin %q: a jail is named by 1 to 64 letters, digits, '.', '-' and '_'", s)
	}
	return Origin(s), nil
}

// Fail2banJail is the jail of a fail2ban origin, or "" for another origin.
func (o Origin) Fail2banJail() string { return o.after(fail2banOrigin) }

// crowdsecOrigin begins the origin of the blocks a CrowdSec decision made.
const crowdsecOrigin = "crowdsec:"

// OriginCrowdSec is the origin of the blocks of CrowdSec's decisions of
// origin (cscli, CAPI, lists, crowdsec …).
func OriginCrowdSec(origin string) Origin { return Origin(crowdsecOrigin + origin) }

// CrowdSec is the decisions' origin of a CrowdSec origin, or "" for another
// origin.
func (o Origin) CrowdSec() string { return o.after(crowdsecOrigin) }

// PortSeen is one port of a scan's evidence.
type PortSeen struct {
	Port  uint16      `json:"port"`
	Proto ports.Proto `json:"proto,omitempty"` // absent: TCP
	Seen  time.Time   `json:"seen"`
}

// Block is a decision to drop a prefix.
type Block struct {
	Prefix  netip.Prefix `json:"prefix"`
	Origin  Origin       `json:"origin"`
	Reason  string       `json:"reason,omitempty"`
	By      string       `json:"by,omitempty"` // who asked: "uid 0", "kernel"
	Created time.Time    `json:"created"`
	Expires time.Time    `json:"expires,omitzero"` // zero: never
	Ports   []PortSeen   `json:"ports,omitempty"`  // scan evidence
	// Fleet: shared with the fleet (a manual block given with --fleet).
	Fleet bool `json:"fleet,omitempty"`
}

// Allow is a decision never to block a prefix.
type Allow struct {
	Prefix  netip.Prefix `json:"prefix"`
	Origin  Origin       `json:"origin"`
	Reason  string       `json:"reason,omitempty"`
	By      string       `json:"by,omitempty"`
	Created time.Time    `json:"created"`
	Expires time.Time    `json:"expires,omitzero"`
}

// Expired reports whether the block no longer applies at now.
func (b Block) Expired(now time.Time) bool { return !b.Expires.IsZero() && !now.Before(b.Expires) }

// Expired reports whether the allow no longer applies at now.
func (a Allow) Expired(now time.Time) bool { return !a.Expires.IsZero() && !now.Before(a.Expires) }

// Source is a list hbf loads entries from, kept as one record: where it is,
// and a copy of its last content that parsed.
type Source struct {
	ID       string    `json:"id"` // e.g. "file:/etc/hbf/blocklist.txt", "url:https://…"
	Location string    `json:"location"`
	Loaded   time.Time `json:"loaded"`
	SHA256   string    `json:"sha256"`
	Entries  int       `json:"entries"`
	// A feed's validators, for a conditional GET of the same content.
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
}

// Change is one entry of the history.
type Change struct {
	Time   time.Time    `json:"time"`
	Action string       `json:"action"` // block, unblock, expire, allow, disallow
	Prefix netip.Prefix `json:"prefix"`
	Origin Origin       `json:"origin,omitempty"`
	Reason string       `json:"reason,omitempty"`
	By     string       `json:"by,omitempty"`
}

// Store is the open database.
type Store struct {
	db  *bolt.DB
	dir string
}

// Recovery tells what Open found wrong and did about it; the zero value
// means the store opened as it was.
type Recovery struct {
	Found string // "zero-length store", "corrupt store: …"
	Did   string // "restored the backup of …", "started an empty store"
	// Empty: nothing was restored; the caller must rebuild from what the
	// kernel still holds.
	Empty bool
}

func (r Recovery) String() string {
	if r.Found == "" {
		return ""
	}
	return r.Found + "; " + r.Did
}

// Open opens the store in dir, creating it on first use.
func Open(dir string) (*Store, Recovery, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, Recovery{}, fmt.Errorf("state folder: %w", err)
	}
	if err := writable(dir); err != nil {
		return nil, Recovery{}, err
	}
	path := filepath.Join(dir, fileName)
	_, statErr := os.Stat(path)
	existed := statErr == nil

	db, problem := openChecked(path, existed)
	if problem == "" {
		return &Store{db: db, dir: dir}, Recovery{}, nil
	}

	// Keep the damaged file for a post-mortem, never overwrite it.
	rec := Recovery{Found: problem}
	aside := fmt.Sprintf("%s.damaged-%s", path, time.Now().UTC().Format("20060102T150405"))
	if err := os.Rename(path, aside); err != nil {
		return nil, rec, fmt.Errorf("%s, and moving it aside failed: %w", problem, err)
	}
	backup := filepath.Join(dir, backupName)
	if err := copyFile(backup, path); err == nil {
		if db, p := openChecked(path, true); p == "" {
			rec.Did = fmt.Sprintf("restored the backup %s (the damaged file is %s)", backup, aside)
			return &Store{db: db, dir: dir}, rec, nil
		}
		os.Remove(path)
	}
	db, p := openChecked(path, false)
	if p != "" {
		return nil, rec, fmt.Errorf("%s, and a new store cannot be created: %s", problem, p)
	}
	rec.Did = fmt.Sprintf("no usable backup: started an empty store (the damaged file is %s)", aside)
	rec.Empty = true
	return &Store{db: db, dir: dir}, rec, nil
}

// openChecked opens path and checks it is a whole hbf store. It returns a
// description of the problem instead of an error, for Recovery.
func openChecked(path string, existed bool) (*bolt.DB, string) {
	if existed {
		st, err := os.Stat(path)
		if err != nil {
			return nil, err.Error()
		}
		if st.Size() == 0 {
			// bbolt would open it as a new, empty database without a word.
			return nil, "zero-length store " + path
		}
	}
	var db *bolt.DB
	problem := ""
	func() {
		// bbolt panics on some damaged pages, in Open as in reads.
		defer func() {
			if r := recover(); r != nil {
				problem = fmt.Sprintf("corrupt store %s: %v", path, r)
			}
		}()
		var err error
		// A large first mapping, which costs address space only: a store
		// growing by 100,000 records in one transaction otherwise maps
		// itself again at each doubling.
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, InitialMmapSize: 256 << 20})
		if err != nil {
			problem = fmt.Sprintf("corrupt store %s: %v", path, err)
			return
		}
		err = db.Update(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			meta := tx.Bucket(bucketMeta)
			if meta == nil {
				if existed {
					return errors.New("it has no hbf metadata (truncated, or not an hbf store)")
				}
				var err error
				if meta, err = tx.CreateBucket(bucketMeta); err != nil {
					return err
				}
				if err := meta.Put(keySchema, []byte(schema)); err != nil {
					return err
				}
			}
			if v := string(meta.Get(keySchema)); v != schema {
				return fmt.Errorf("schema %q, this hbf reads %q", v, schema)
			}
			for _, b := range [][]byte{bucketBlocks, bucketAllows, bucketSources, bucketHistory} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			problem = fmt.Sprintf("corrupt store %s: %v", path, err)
		}
	}()
	if problem != "" {
		if db != nil {
			db.Close()
		}
		return nil, problem
	}
	return db, ""
}

func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".write-test-")
	if err != nil {
		return fmt.Errorf("state folder %s is not writable: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Backup writes a consistent copy beside the store, atomically replacing
// the previous one.
func (s *Store) Backup() error {
	tmp := filepath.Join(s.dir, backupName+".tmp")
	err := s.db.View(func(tx *bolt.Tx) error { return tx.CopyFile(tmp, 0o600) })
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("back up the store: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.dir, backupName))
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func key(origin Origin, p netip.Prefix) []byte { return []byte(string(origin) + "|" + p.String()) }

func put(tx *bolt.Tx, bucket []byte, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put(k, data)
}

// PutBlocks records blocks, replacing records of the same origin and prefix.
func (s *Store) PutBlocks(blocks ...Block) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range blocks {
			if err := put(tx, bucketBlocks, key(b.Origin, b.Prefix), b); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReplaceBlocks makes blocks the records of p in one transaction: first
// the records of p of each origin in drop go, then blocks are put.
func (s *Store) ReplaceBlocks(p netip.Prefix, drop []Origin, blocks ...Block) error {
	return s.ReplaceMany([]Replacement{{Prefix: p, Drop: drop, Put: blocks}})
}

// Replacement changes the records of one prefix: the records of the
// origins in Drop go, then Put are put.
type Replacement struct {
	Prefix netip.Prefix
	Drop   []Origin
	Put    []Block
}

// ReplaceMany makes every replacement in one transaction: a thousand
// prefixes cost one write to disk, not a thousand.
func (s *Store) ReplaceMany(rs []Replacement) error {
	// In key order: bbolt keeps a transaction's new keys in one node
	// until it commits, and each key out of order moves those after it.
	// 100,000 records in any order took seconds; in order, a fraction.
	type op struct {
		key []byte
		val []byte // nil: delete
	}
	var ops []op
	for _, r := range rs {
		for _, o := range r.Drop {
			ops = append(ops, op{key: key(o, r.Prefix)})
		}
		for _, b := range r.Put {
			if b.Prefix != r.Prefix {
				return fmt.Errorf("a record of %s among those of %s", b.Prefix, r.Prefix)
			}
			data, err := json.Marshal(b)
			if err != nil {
				return err
			}
			ops = append(ops, op{key: key(b.Origin, b.Prefix), val: data})
		}
	}
	// Stable: a drop and a put of one key keep their order.
	slices.SortStableFunc(ops, func(a, b op) int { return bytes.Compare(a.key, b.key) })
	return s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketBlocks)
		for _, o := range ops {
			var err error
			if o.val == nil {
				err = bk.Delete(o.key)
			} else {
				err = bk.Put(o.key, o.val)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteBlock removes the record of origin for p; false when there was none.
func (s *Store) DeleteBlock(origin Origin, p netip.Prefix) (bool, error) {
	return s.delete(bucketBlocks, key(origin, p))
}

// PutAllows records allows.
func (s *Store) PutAllows(allows ...Allow) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, a := range allows {
			if err := put(tx, bucketAllows, key(a.Origin, a.Prefix), a); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteAllow removes the allow of origin for p.
func (s *Store) DeleteAllow(origin Origin, p netip.Prefix) (bool, error) {
	return s.delete(bucketAllows, key(origin, p))
}

func (s *Store) delete(bucket, k []byte) (bool, error) {
	found := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		found = b.Get(k) != nil
		return b.Delete(k)
	})
	return found, err
}

// Blocks lists every block record.
func (s *Store) Blocks() ([]Block, error) { return list[Block](s, bucketBlocks) }

// Allows lists every allow record.
func (s *Store) Allows() ([]Allow, error) { return list[Allow](s, bucketAllows) }

// Sources lists the list sources.
func (s *Store) Sources() ([]Source, error) { return list[Source](s, bucketSources) }

func list[T any](s *Store, bucket []byte) ([]T, error) {
	var out []T
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var rec T
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			out = append(out, rec)
			return nil
		})
	})
	return out, err
}
