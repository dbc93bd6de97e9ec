package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Membership: this node's key under members/, on a lease of its own that
// ends within memberTTL of the node's death, rewritten when what the node
// says of itself changes.

// join writes this node's membership key on a lease of its own, and says
// what it wrote, at which revision.
func (n *Node) join(ctx context.Context, cli *clientv3.Client) (clientv3.LeaseID, Member, int64, error) {
	c, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	lease, err := cli.Grant(c, int64(memberTTL/time.Second))
	if err != nil {
		return 0, Member{}, 0, fmt.Errorf("membership lease: %w", err)
	}
	m := n.cfg.Member()
	rev, err := n.putMember(c, cli, lease.ID, m)
	if err != nil {
		return 0, Member{}, 0, err
	}
	return lease.ID, m, rev, nil
}

// putMember writes m, the membership as of now, with the clock, and says
// at which revision.
func (n *Node) putMember(ctx context.Context, cli *clientv3.Client, lease clientv3.LeaseID, m Member) (int64, error) {
	m.Version, m.Clock, m.Packs = Version, n.cfg.Now(), true
	data, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	resp, err := cli.Put(ctx, n.cfg.Layout.Member(n.cfg.Node), string(data), clientv3.WithLease(lease))
	if err != nil {
		return 0, fmt.Errorf("membership key: %w", err)
	}
	return resp.Header.Revision, nil
}

// sameMember compares memberships but for their clocks.
func sameMember(a, b Member) bool {
	a.Clock, b.Clock, a.Seen, b.Seen = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	a.Version, b.Version = 0, 0
	return sameJSON(a, b)
}

// keepMember keeps the membership lease alive and the key fresh. etcd not
// answering for a lease's time ends the session: the client would retry
// behind the node's back, and the node would claim a connection it has not.
func (n *Node) keepMember(ctx context.Context, cli *clientv3.Client, lease clientv3.LeaseID, written Member) error {
	alive, err := cli.KeepAlive(ctx, lease)
	if err != nil {
		return fmt.Errorf("membership lease: %w", err)
	}
	tick := time.NewTicker(memberCheck)
	defer tick.Stop()
	refresh := time.NewTimer(jitter(memberRefresh))
	defer refresh.Stop()
	silence := time.NewTimer(memberTTL)
	defer silence.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-alive:
			if !ok {
				return errors.New("the membership lease was lost")
			}
			silence.Reset(memberTTL)
			continue
		case <-silence.C:
			return fmt.Errorf("etcd did not answer for %s", memberTTL)
		case <-tick.C:
			if sameMember(n.cfg.Member(), written) {
				continue
			}
		case <-refresh.C:
		}
		m := n.cfg.Member()
		c, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := n.putMember(c, cli, lease, m)
		cancel()
		if err != nil {
			n.countError("member")
			if slow(ctx, err) {
				refresh.Reset(memberCheck) // the lease says whether etcd is gone
				continue
			}
			return err
		}
		written = m
		refresh.Reset(jitter(memberRefresh))
	}
}

// jitter spreads d by up to half again: members started together, as a
// fleet often is, would otherwise write their keys in the same second,
// and every member read all of them at once.
func jitter(d time.Duration) time.Duration { return d + rand.N(d/2) }
