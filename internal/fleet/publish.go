package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Publishing: this node's subtree, blocks/<node>/, kept what it publishes,
// a transaction of at most txnOps writes at a time, each key on a lease
// that only cleans it up after its expiry.

// SetOwn makes blocks what this node publishes, for a node without
// Config.Own: its subtree follows, now if connected, else once it is.
func (n *Node) SetOwn(blocks []Block) {
	n.mu.Lock()
	n.own = blocks
	n.mu.Unlock()
	n.Republish()
}

// Republish tells the node that what it publishes (Config.Own) changed:
// its subtree follows, now if connected, else once it is. It never blocks,
// and calls meanwhile make one round.
func (n *Node) Republish() { signal(n.ownSet) }

// ownBlocks is what this node publishes now, by prefix.
func (n *Node) ownBlocks() map[netip.Prefix]Block {
	blocks := n.cfg.Own()
	own := make(map[netip.Prefix]Block, len(blocks))
	for _, b := range blocks {
		b.Version = Version
		own[b.Prefix] = b
	}
	return own
}

// writes is what a session's publishing keeps between its rounds.
type writes struct {
	// Keys of this node's blocks live on leases of their own, granted per
	// minute of expiry, for this connection.
	leases map[int64]clientv3.LeaseID
	// pending is what this node wrote that its watch has not brought
	// back yet. Without it, a watch that lags (a loaded etcd) makes every
	// round write again what the last one did, and the load grows with
	// the lag.
	pending map[netip.Prefix]pendingWrite
}

type pendingWrite struct {
	block    *Block // nil: deleted
	revision int64  // of the write
}

// known is this node's subtree as the view holds it at revision seen, with
// the writes the view has not caught up with yet; those it has are done
// with.
func (w *writes) known(view map[netip.Prefix]Block, seen int64) map[netip.Prefix]Block {
	have := make(map[netip.Prefix]Block, len(view))
	maps.Copy(have, view)
	for p, pw := range w.pending {
		switch {
		case pw.revision <= seen:
			delete(w.pending, p) // the view holds it, or what came after it
		case pw.block == nil:
			delete(have, p)
		default:
			have[p] = *pw.block
		}
	}
	return have
}

// publish keeps this node's subtree what SetOwn said, each time it is
// told or the subtree changed: missing or changed blocks are written,
// others deleted. A block an unblock of the fleet ends is not published.
func (n *Node) publish(ctx context.Context, cli *clientv3.Client, w *writes) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.ownSet:
		}
		if err := n.publishOnce(ctx, cli, w); err != nil {
			n.countError("publish")
			if !slow(ctx, err) {
				return err
			}
			// A write that timed out may have been made or not: the watch
			// says which, and the next round writes what is missing.
			n.cfg.Log.Warn("etcd is slow to take this node's blocks; trying again", "err", err)
			signal(n.ownSet)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoffMin):
			}
		}
	}
}

// slow says whether err is an operation that ran out of time while the
// session's connection lives: etcd is loaded, not gone, and ending the
// session would only add the load of a new one. A connection that fails
// ends the session on its own (watchConnection).
func slow(ctx context.Context, err error) bool {
	return ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded)
}

func (n *Node) publishOnce(ctx context.Context, cli *clientv3.Client, w *writes) error {
	want := n.ownBlocks()
	n.mu.Lock()
	have := w.known(n.view.Blocks[n.cfg.Node], n.view.Revision)
	unblocks := maps.Clone(n.view.Unblocks)
	n.mu.Unlock()
	now := n.cfg.Now()
	type change struct {
		op     clientv3.Op
		prefix netip.Prefix
		block  *Block // nil: deleted
	}
	var changes []change
	puts := 0
	for p, b := range want {
		if u, ok := unblocks[p]; ok && u.Ends(b) || b.Expired(now) {
			delete(want, p)
			continue
		}
		if old, ok := have[p]; ok && sameBlock(old, b) {
			continue
		}
		data, err := json.Marshal(b)
		if err != nil {
			return err
		}
		var opts []clientv3.OpOption
		if !b.ExpiresAt.IsZero() {
			lease, err := n.lease(ctx, cli, w.leases, b.ExpiresAt)
			if err != nil {
				return err
			}
			opts = append(opts, clientv3.WithLease(lease))
		}
		changes = append(changes, change{clientv3.OpPut(n.cfg.Layout.Block(n.cfg.Node, p), string(data), opts...), p, &b})
		puts++
	}
	for p := range have {
		if _, ok := want[p]; !ok {
			changes = append(changes, change{clientv3.OpDelete(n.cfg.Layout.Block(n.cfg.Node, p)), p, nil})
		}
	}
	for batch := range slices.Chunk(changes, txnOps) {
		ops := make([]clientv3.Op, len(batch))
		for i, c := range batch {
			ops[i] = c.op
		}
		c, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := cli.Txn(c).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("publish this node's blocks: %w", err)
		}
		for _, c := range batch {
			w.pending[c.prefix] = pendingWrite{block: c.block, revision: resp.Header.Revision}
		}
	}
	n.mu.Lock()
	n.counts.Published += uint64(puts)
	n.mu.Unlock()
	return nil
}

// lease is the lease of keys expiring within the minute of expires: it
// ends keyGrace after that minute.
func (n *Node) lease(ctx context.Context, cli *clientv3.Client, leases map[int64]clientv3.LeaseID, expires time.Time) (clientv3.LeaseID, error) {
	minute := expires.Truncate(leaseStep).Add(leaseStep)
	if id, ok := leases[minute.Unix()]; ok {
		return id, nil
	}
	ttl := max(int64(minute.Add(keyGrace).Sub(n.cfg.Now())/time.Second), 1)
	c, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := cli.Grant(c, ttl)
	if err != nil {
		return 0, fmt.Errorf("lease for blocks ending at %s: %w", minute.Format(time.RFC3339), err)
	}
	leases[minute.Unix()] = resp.ID
	return resp.ID, nil
}

// sameBlock compares blocks as their JSON does: times round trip without
// their monotonic reading. Field by field: a publish compares every block
// of the node's, and encoding each twice cost more than the rest.
func sameBlock(a, b Block) bool {
	return a.Version == b.Version && a.Prefix == b.Prefix && a.Origin == b.Origin && a.Reason == b.Reason &&
		a.Created.Equal(b.Created) && a.ExpiresAt.Equal(b.ExpiresAt) &&
		slices.EqualFunc(a.Ports, b.Ports, func(x, y Port) bool {
			return x.Port == y.Port && x.Proto == y.Proto && x.Seen.Equal(y.Seen)
		})
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
