package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Reading and watching: the view is the fleet read whole at one revision,
// then followed from the next; a value that does not decode or does not
// belong is refused, counted, and logged once.

// resumeFrom is the revision after which a new session's watch starts:
// the view's, so that a reconnection costs the events missed, not a read
// of the whole fleet; 0 when the fleet must be read whole: at the first
// session, after a compaction past the view, or when etcd is behind the
// view (it lost its data).
func (n *Node) resumeFrom(now int64) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.compacted || now <= n.view.Revision {
		return 0
	}
	return n.view.Revision
}

// read reads the whole fleet at one revision, in place of what the node
// held: what was removed while it was away goes from its view too.
func (n *Node) read(ctx context.Context, cli *clientv3.Client) (int64, error) {
	c, cancel := context.WithTimeout(ctx, 2*opTimeout)
	defer cancel()
	resp, err := cli.Get(c, n.cfg.Layout.Prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read the fleet: %w", err)
	}
	view := newView()
	var refused []refusal
	for _, kv := range resp.Kvs {
		k, err := n.cfg.Layout.Parse(string(kv.Key))
		if err == nil {
			err = n.take(&view, k, kv.Value, nil)
		}
		if err != nil {
			refused = append(refused, refusal{string(kv.Key), kv.ModRevision, err})
		}
	}
	view.Revision = resp.Header.Revision
	n.mu.Lock()
	n.view = view
	n.touched = touched{whole: true}
	n.status.Revision = view.Revision
	n.compacted = false
	log := n.refuse(refused)
	n.mu.Unlock()
	n.logRefused(log)
	signal(n.changed)
	signal(n.ownSet) // the subtree as read may differ from what the node publishes
	return view.Revision, nil
}

// refusal is a key refused, at its revision.
type refusal struct {
	key string
	rev int64
	err error
}

// refuse counts what was refused, under the node's lock: whoever sees the
// view sees the refusals of the same events counted. It returns those to
// log, each key once per revision.
func (n *Node) refuse(refused []refusal) []refusal {
	var log []refusal
	for _, r := range refused {
		n.counts.Rejected[r.reason()]++
		if n.rejected[r.key] != r.rev {
			log = append(log, r)
		}
		n.rejected[r.key] = r.rev
	}
	return log
}

// reason is the metric's reason of a refusal.
func (r refusal) reason() string {
	var rej *Rejection
	if errors.As(r.err, &rej) {
		return rej.Reason
	}
	return RejectOutside
}

// logRefused logs refusals, outside the node's lock.
func (n *Node) logRefused(refused []refusal) {
	for _, r := range refused {
		n.cfg.Log.Warn("a fleet entry is refused and skipped", "key", r.key, "reason", r.reason(), "err", r.err)
	}
}

// take puts a key and its value into v, or says why not; t, when set,
// notes each block it puts.
func (n *Node) take(v *View, k Key, value []byte, t *touched) error {
	switch k.Kind {
	case KindMember:
		m, err := DecodeMember(value)
		if err == nil {
			m.Seen = n.cfg.Now()
			v.Members[k.Node] = m
		}
		return err
	case KindBlock:
		b, err := DecodeBlock(value, k.Prefix)
		if err != nil {
			return err
		}
		if b.Expired(n.cfg.Now()) {
			return reject(RejectExpired, "expired at %s", b.ExpiresAt.Format(time.RFC3339))
		}
		v.putBlock(k.Node, b)
		return nil
	case KindPack:
		pk, err := DecodePack(value, v.packed[:0])
		v.packed = pk.Blocks[:0]
		defer clear(pk.Blocks) // nothing kept alive by the room
		if err != nil {
			return err
		}
		t.room(len(pk.Blocks))
		// A pack keeps the blocks of it that expired until its lease ends
		// with the last: they are skipped, not refused.
		now := n.cfg.Now()
		held := make([]netip.Prefix, 0, len(pk.Blocks))
		for _, b := range pk.Blocks {
			if b.Expired(now) {
				continue
			}
			b.pack = k.Pack
			v.putBlock(k.Node, b)
			held = append(held, b.Prefix)
			t.block(Ref{k.Node, b.Prefix})
		}
		v.packs[packRef{k.Node, k.Pack}] = held
		return nil
	case KindAllow:
		a, err := DecodeAllow(value, k.Prefix)
		if err == nil {
			v.Allows[k.Prefix] = a
		}
		return err
	default:
		u, err := DecodeUnblock(value, k.Prefix)
		if err == nil {
			v.Unblocks[k.Prefix] = u
		}
		return err
	}
}

func (v *View) putBlock(node string, b Block) {
	if v.Blocks[node] == nil {
		v.Blocks[node] = map[netip.Prefix]Block{}
	}
	v.Blocks[node][b.Prefix] = b
}

// drop removes a deleted key, or one whose new value is refused, from v;
// t, when set, notes each block it removes.
func (n *Node) drop(v *View, k Key, t *touched) {
	switch k.Kind {
	case KindMember:
		delete(v.Members, k.Node)
	case KindBlock:
		v.dropBlock(k.Node, k.Prefix, "")
		t.block(Ref{k.Node, k.Prefix})
	case KindPack:
		pr := packRef{k.Node, k.Pack}
		for _, p := range v.packs[pr] {
			v.dropBlock(k.Node, p, k.Pack)
			t.block(Ref{k.Node, p})
		}
		delete(v.packs, pr)
	case KindAllow:
		delete(v.Allows, k.Prefix)
	case KindUnblock:
		delete(v.Unblocks, k.Prefix)
	}
}

// dropBlock removes node's block of p if it came from the pack named
// ("": a key of its own). A node writes a block in one place at a time,
// yet a block moved from one key to another may be written before it is
// removed from the first: the newer stays.
func (v *View) dropBlock(node string, p netip.Prefix, pack string) {
	if b, ok := v.Blocks[node][p]; !ok || b.pack != pack {
		return
	}
	delete(v.Blocks[node], p)
	if len(v.Blocks[node]) == 0 {
		delete(v.Blocks, node)
	}
}

// errCompacted: etcd no longer holds the events after the view's revision.
var errCompacted = errors.New("the fleet's history was compacted past this node's view")

// follow keeps the view in step with the fleet from the revision after
// rev: when etcd compacted its history past it, it reads the fleet whole
// and follows on from there. Any other failure ends the session.
func (n *Node) follow(ctx context.Context, cli *clientv3.Client, rev int64) error {
	for {
		err := n.watch(ctx, cli, rev)
		if !errors.Is(err, errCompacted) {
			return err
		}
		n.mu.Lock()
		n.compacted = true // should the read fail, the next session reads whole
		n.mu.Unlock()
		n.cfg.Log.Info("the fleet's history was compacted past this node's view: reading it whole", "revision", rev)
		if rev, err = n.read(ctx, cli); err != nil {
			n.countError("read")
			return err
		}
	}
}

// watch follows the fleet from the revision after rev, until it fails.
// It asks for rev's events too, which the view holds already: etcd
// compacted at rev+1 has dropped the deletions made at rev+1 yet lets a
// watch start there, and only a start before the compaction says so.
// Events applied twice change nothing.
func (n *Node) watch(ctx context.Context, cli *clientv3.Client, rev int64) error {
	ownPrefix := n.cfg.Layout.NodeBlocks(n.cfg.Node)
	wch := cli.Watch(clientv3.WithRequireLeader(ctx), n.cfg.Layout.Prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev))
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("%w (revision %d)", errCompacted, rev)
		}
		if err := resp.Err(); err != nil {
			n.countError("watch")
			return fmt.Errorf("watch the fleet: %w", err)
		}
		var refused []refusal
		own := false
		n.mu.Lock()
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			own = own || strings.HasPrefix(key, ownPrefix)
			k, err := n.cfg.Layout.Parse(key)
			if err == nil {
				n.touched.note(k)
				n.drop(&n.view, k, &n.touched)
				if ev.Type != mvccpb.PUT {
					continue
				}
				err = n.take(&n.view, k, ev.Kv.Value, &n.touched)
			}
			// A member that does not read packs: this node's are written
			// again for it.
			own = own || err == nil && k.Kind == KindMember && !n.view.Members[k.Node].Packs
			if err != nil && ev.Type == mvccpb.PUT {
				refused = append(refused, refusal{key, ev.Kv.ModRevision, err})
			}
		}
		// The view holds every event up to the last one's revision. Not up
		// to the header's: etcd sends a watch that lags its events in
		// batches, each under the header of its current revision.
		if len(resp.Events) > 0 {
			rev = max(rev, resp.Events[len(resp.Events)-1].Kv.ModRevision)
			n.view.Revision, n.status.Revision = rev, rev
		}
		log := n.refuse(refused)
		n.mu.Unlock()
		n.logRefused(log)
		signal(n.changed)
		if own {
			signal(n.ownSet) // someone touched this node's subtree: put it right
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("the fleet's watch ended")
}
