package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
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
	// lastPack is the time that named the last pack written.
	lastPack int64
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

// packSize bounds the blocks of one pack: a value of some 200 bytes a
// block stays far below etcd's request limit of 1.5 MiB.
const packSize = 100

// packsRead says whether every member reads packs, under the node's lock.
func (n *Node) packsRead() bool {
	for _, m := range n.view.Members {
		if !m.Packs {
			return false
		}
	}
	return len(n.view.Members) > 0
}

func (n *Node) publishOnce(ctx context.Context, cli *clientv3.Client, w *writes) error {
	want := n.ownBlocks()
	n.mu.Lock()
	have := w.known(n.view.Blocks[n.cfg.Node], n.view.Revision)
	unblocks := maps.Clone(n.view.Unblocks)
	readers := n.packsRead()
	n.mu.Unlock()
	now := n.cfg.Now()
	var puts []Block
	for p, b := range want {
		if u, ok := unblocks[p]; ok && u.Ends(b) || b.Expired(now) {
			delete(want, p)
			continue
		}
		// A member that does not read packs joined: what they hold is
		// written again, each under a key of its own.
		if old, ok := have[p]; ok && sameBlock(old, b) && (old.pack == "" || readers) {
			continue
		}
		puts = append(puts, b)
	}
	// Several new blocks go out in packs when every member reads them:
	// each member then reads one key for up to a hundred blocks.
	var alone, packed []Block
	for _, b := range puts {
		if readers && len(puts) > 1 && packable(b) {
			packed = append(packed, b)
		} else {
			alone = append(alone, b)
		}
	}
	var changes []change
	for _, b := range alone {
		c, err := n.putBlock(ctx, cli, w, b)
		if err != nil {
			return err
		}
		changes = append(changes, c)
	}
	for pk := range slices.Chunk(packed, packSize) {
		c, err := n.putPack(ctx, cli, w, w.packID(have, now), pk)
		if err != nil {
			return err
		}
		changes = append(changes, c)
	}
	// Then what is put elsewhere or no more is taken from where it was:
	// never absent between the two. A pack is written again without it,
	// but for its blocks over already: they stay until its lease ends,
	// rather than costing every member a read of the rest.
	moved := make(map[netip.Prefix]bool, len(puts))
	for _, b := range puts {
		moved[b.Prefix] = true
	}
	inPack := make(map[netip.Prefix]bool, len(packed))
	for _, b := range packed {
		inPack[b.Prefix] = true
	}
	repack := map[string]bool{}
	for p, old := range have {
		_, wanted := want[p]
		switch {
		case old.pack != "" && (moved[p] || !wanted && !old.Expired(now)):
			repack[old.pack] = true
		case old.pack == "" && !wanted:
			changes = append(changes, change{ops: []clientv3.Op{clientv3.OpDelete(n.cfg.Layout.Block(n.cfg.Node, p))},
				removed: []netip.Prefix{p}})
		case old.pack == "" && moved[p] && inPack[p]:
			changes = append(changes, change{ops: []clientv3.Op{clientv3.OpDelete(n.cfg.Layout.Block(n.cfg.Node, p))}})
		}
	}
	for id := range repack {
		var keep []Block
		var removed []netip.Prefix
		for p, old := range have {
			if _, wanted := want[p]; old.pack != id || moved[p] {
				continue // elsewhere, or put again: pending as such
			} else if wanted {
				keep = append(keep, old)
			} else {
				removed = append(removed, p)
			}
		}
		if len(keep) == 0 {
			changes = append(changes, change{ops: []clientv3.Op{clientv3.OpDelete(n.cfg.Layout.Pack(n.cfg.Node, id))}, removed: removed})
			continue
		}
		c, err := n.putPack(ctx, cli, w, id, keep)
		if err != nil {
			return err
		}
		c.removed = removed
		changes = append(changes, c)
	}
	if err := n.commit(ctx, cli, w, changes); err != nil {
		return err
	}
	n.mu.Lock()
	n.counts.Published += uint64(len(puts))
	n.mu.Unlock()
	return nil
}

// change is a write of the subtree: its operations, the blocks it puts
// and those it removes for good.
type change struct {
	ops     []clientv3.Op
	put     []Block
	removed []netip.Prefix
}

// commit makes changes in their order, a transaction of at most txnOps
// operations at a time, and notes them pending until the watch brings
// them back.
func (n *Node) commit(ctx context.Context, cli *clientv3.Client, w *writes, changes []change) error {
	for len(changes) > 0 {
		var ops []clientv3.Op
		i := 0
		for ; i < len(changes) && len(ops)+len(changes[i].ops) <= txnOps; i++ {
			ops = append(ops, changes[i].ops...)
		}
		c, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := cli.Txn(c).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("publish this node's blocks: %w", err)
		}
		for _, ch := range changes[:i] {
			for _, b := range ch.put {
				w.pending[b.Prefix] = pendingWrite{block: &b, revision: resp.Header.Revision}
			}
			for _, p := range ch.removed {
				w.pending[p] = pendingWrite{revision: resp.Header.Revision}
			}
		}
		changes = changes[i:]
	}
	return nil
}

// putBlock writes b under a key of its own.
func (n *Node) putBlock(ctx context.Context, cli *clientv3.Client, w *writes, b Block) (change, error) {
	data, err := json.Marshal(b)
	if err != nil {
		return change{}, err
	}
	opts, err := n.leaseFor(ctx, cli, w, b)
	if err != nil {
		return change{}, err
	}
	return change{ops: []clientv3.Op{clientv3.OpPut(n.cfg.Layout.Block(n.cfg.Node, b.Prefix), string(data), opts...)},
		put: []Block{b}}, nil
}

// putPack writes blocks as the pack id, on the lease of the last to end.
func (n *Node) putPack(ctx context.Context, cli *clientv3.Client, w *writes, id string, blocks []Block) (change, error) {
	last := blocks[0]
	put := make([]Block, len(blocks))
	for i, b := range blocks {
		if b.ExpiresAt.IsZero() || !last.ExpiresAt.IsZero() && b.ExpiresAt.After(last.ExpiresAt) {
			last = b
		}
		b.pack = id
		put[i] = b
	}
	opts, err := n.leaseFor(ctx, cli, w, last)
	if err != nil {
		return change{}, err
	}
	return change{ops: []clientv3.Op{clientv3.OpPut(n.cfg.Layout.Pack(n.cfg.Node, id), string(encodePack(blocks)), opts...)}, put: put}, nil
}

// leaseFor is the options that put a key holding b on a lease that ends
// after it; none for a block that never ends.
func (n *Node) leaseFor(ctx context.Context, cli *clientv3.Client, w *writes, b Block) ([]clientv3.OpOption, error) {
	if b.ExpiresAt.IsZero() {
		return nil, nil
	}
	lease, err := n.lease(ctx, cli, w.leases, b.ExpiresAt)
	if err != nil {
		return nil, err
	}
	return []clientv3.OpOption{clientv3.WithLease(lease)}, nil
}

// packID names a new pack by the time, in base 36: never a pack this node
// holds, nor one it named before in this session.
func (w *writes) packID(have map[netip.Prefix]Block, now time.Time) string {
	next := max(now.UnixNano(), w.lastPack+1)
	held := map[string]bool{}
	for _, b := range have {
		held[b.pack] = true
	}
	for held[strconv.FormatInt(next, 36)] {
		next++
	}
	w.lastPack = next
	return strconv.FormatInt(next, 36)
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
