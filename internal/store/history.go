package store

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The history of changes, bounded, and the strikes of repeat scanners:
// what the store remembers of decisions that ended.

// Record appends changes to the history, dropping the oldest beyond its bound.
func (s *Store) Record(changes ...Change) error {
	// Of a batch longer than the history keeps, only its last ones would
	// stay: the rest is never written, where writing then trimming them
	// cost a 100,000-change batch seconds of moving keys around.
	if len(changes) > historyMax {
		changes = changes[len(changes)-historyMax:]
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		h := tx.Bucket(bucketHistory)
		var seq uint64
		for _, c := range changes {
			var err error
			if seq, err = h.NextSequence(); err != nil {
				return err
			}
			if err := put(tx, bucketHistory, historyKey(seq), c); err != nil {
				return err
			}
		}
		if seq <= historyMax {
			return nil
		}
		// Keys are sequence numbers: everything below seq-historyMax+1 goes.
		keep := historyKey(seq - historyMax + 1)
		var old [][]byte
		c := h.Cursor()
		for k, _ := c.First(); k != nil && string(k) < string(keep); k, _ = c.Next() {
			old = append(old, k)
		}
		for _, k := range old {
			if err := h.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

func historyKey(seq uint64) []byte { return fmt.Appendf(nil, "%016x", seq) }

// History returns the most recent changes, oldest first, at most n.
func (s *Store) History(n int) ([]Change, error) {
	var out []Change
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.Last(); k != nil && len(out) < n; k, v = c.Prev() {
			var ch Change
			if err := json.Unmarshal(v, &ch); err != nil {
				return err
			}
			out = append(out, ch)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

var bucketStrikes = []byte("strikes")

// strike counts a source's scan blocks.
type strike struct {
	Count int       `json:"count"`
	Last  time.Time `json:"last"` // when the last counted block was made
}

// Strike counts a scan block of src made at at, and returns which offence
// it is (1 for the first). The same block counted twice (an event and a
// reconciliation) counts once; a source quiet for longer than forget starts
// again at 1.
func (s *Store) Strike(src netip.Addr, at time.Time, forget time.Duration) (int, error) {
	var n int
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketStrikes)
		if err != nil {
			return err
		}
		k := []byte(src.String())
		var rec strike
		if v := b.Get(k); v != nil {
			_ = json.Unmarshal(v, &rec)
		}
		switch d := at.Sub(rec.Last); {
		case rec.Count > 0 && d < time.Second && d > -time.Second:
			n = rec.Count
			return nil
		case forget > 0 && d > forget:
			rec.Count = 0
		}
		rec.Count++
		rec.Last = at
		n = rec.Count
		return put(tx, bucketStrikes, k, rec)
	})
	return n, err
}
