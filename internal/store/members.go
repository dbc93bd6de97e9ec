package store

import (
	"encoding/json"
	"net/netip"

	bolt "go.etcd.io/bbolt"
)

// bucketMembers keeps the fleet's members as this host last saw them:
// their addresses are protected from the first packet after a restart,
// before etcd answers, or while it does not.
var bucketMembers = []byte("members")

// SaveMembers makes members (by name, the addresses each publishes) the
// fleet's members as last seen.
func (s *Store) SaveMembers(members map[string][]netip.Addr) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMembers) != nil {
			if err := tx.DeleteBucket(bucketMembers); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucket(bucketMembers); err != nil {
			return err
		}
		for name, addrs := range members {
			if err := put(tx, bucketMembers, []byte(name), addrs); err != nil {
				return err
			}
		}
		return nil
	})
}

// Members are the fleet's members as last seen; none before any was.
func (s *Store) Members() (map[string][]netip.Addr, error) {
	out := map[string][]netip.Addr{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMembers)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var addrs []netip.Addr
			if err := json.Unmarshal(v, &addrs); err != nil {
				return err
			}
			out[string(k)] = addrs
			return nil
		})
	})
	return out, err
}
