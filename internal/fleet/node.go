package fleet

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// Config is what a node of the fleet needs.
type Config struct {
	Endpoints []string
	Layout    Layout
	Node      string
	TLS       *tls.Config // nil: plain HTTP
	Username  string      // etcd authentication; "": none
	Password  string
	// Member is what this node says of itself, read at every refresh of
	// its membership key.
	Member func() Member
	Log    *slog.Logger
	Now    func() time.Time // nil: time.Now
	// Observe, when set, is told of each block a watch brings into the
	// view, as it does: for measurements (the scale benchmark).
	Observe func(node string, b Block)
}

// Timing of a node's work with etcd.
const (
	memberTTL     = 10 * time.Second // the membership lease: a dead node leaves within this
	memberCheck   = 5 * time.Second  // its addresses are looked at, and written when they changed
	memberRefresh = 30 * time.Second // its key is written anyway: the clock, for skew
	// Every write of a key goes to every member's watch: 500 members
	// writing theirs every 5 s cost the fleet as much as 100 new blocks a
	// second.
	opTimeout  = 5 * time.Second // one request; etcd answers in milliseconds when it is well
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
	// keyGrace keeps a block's key this long after its expires_at: the
	// lease only cleans up, expiry is the value's.
	keyGrace  = time.Minute
	txnOps    = 100 // etcd refuses transactions of more than 128 operations
	leaseStep = time.Minute
)

// View is the fleet as this node last read it.
type View struct {
	Revision int64
	Members  map[string]Member
	Blocks   map[string]map[netip.Prefix]Block // by the node that publishes them
	Allows   map[netip.Prefix]Allow
	Unblocks map[netip.Prefix]Unblock
}

func newView() View {
	return View{Members: map[string]Member{}, Blocks: map[string]map[netip.Prefix]Block{},
		Allows: map[netip.Prefix]Allow{}, Unblocks: map[netip.Prefix]Unblock{}}
}

func (v View) clone() View {
	out := View{Revision: v.Revision, Members: maps.Clone(v.Members), Allows: maps.Clone(v.Allows),
		Unblocks: maps.Clone(v.Unblocks), Blocks: make(map[string]map[netip.Prefix]Block, len(v.Blocks))}
	for n, b := range v.Blocks {
		out.Blocks[n] = maps.Clone(b)
	}
	return out
}

// Status is a node's connection to the fleet.
type Status struct {
	Connected bool
	Why       string // the last failure while not connected
	Revision  int64  // applied
	Since     time.Time
}

// Node is this host in the fleet: it keeps its membership alive, publishes
// its own blocks, and reads everyone's. Its methods are safe for
// concurrent use.
type Node struct {
	cfg     Config
	changed chan struct{} // the view changed
	ownSet  chan struct{} // SetOwn was called

	mu       sync.Mutex
	view     View
	own      map[netip.Prefix]Block // what this node publishes
	status   Status
	rejected map[string]int64 // key -> mod revision, logged once
	counts   Counts
	// compacted: etcd's history no longer reaches the view; the next
	// session reads the fleet whole.
	compacted bool
}

// Counts are what a node did, for its metrics.
type Counts struct {
	Published uint64
	Rejected  map[string]uint64 // by reason
	Errors    map[string]uint64 // by operation
}

// NewNode returns a node that works once Run runs.
func NewNode(cfg Config) (*Node, error) {
	if err := CheckNodeName(cfg.Node); err != nil {
		return nil, err
	}
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoint")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Member == nil {
		cfg.Member = func() Member { return Member{} }
	}
	return &Node{cfg: cfg, changed: make(chan struct{}, 1), ownSet: make(chan struct{}, 1), view: newView(),
		own: map[netip.Prefix]Block{}, rejected: map[string]int64{},
		counts: Counts{Rejected: map[string]uint64{}, Errors: map[string]uint64{}}}, nil
}

// Changed receives after the view changed; read View then. Changes come in
// bursts and are not queued one by one.
func (n *Node) Changed() <-chan struct{} { return n.changed }

// View returns the fleet as this node last read it.
func (n *Node) View() View {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.view.clone()
}

// Status says whether the node is connected, and since when.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status
}

// Counts returns what the node did so far.
func (n *Node) Counts() Counts {
	n.mu.Lock()
	defer n.mu.Unlock()
	return Counts{Published: n.counts.Published, Rejected: maps.Clone(n.counts.Rejected), Errors: maps.Clone(n.counts.Errors)}
}

// SetOwn makes blocks what this node publishes: its subtree follows,
// now if connected, else once it is.
func (n *Node) SetOwn(blocks []Block) {
	own := make(map[netip.Prefix]Block, len(blocks))
	for _, b := range blocks {
		b.Version = Version
		own[b.Prefix] = b
	}
	n.mu.Lock()
	n.own = own
	n.mu.Unlock()
	signal(n.ownSet)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (n *Node) countError(op string) {
	n.mu.Lock()
	n.counts.Errors[op]++
	n.mu.Unlock()
}

func (n *Node) setStatus(connected bool, why string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.status.Connected != connected {
		n.status.Since = n.cfg.Now()
	}
	n.status.Connected, n.status.Why = connected, why
}

// Run works with etcd until ctx ends: it connects, and after every failure
// connects again, backing off, reading the fleet whole each time.
func (n *Node) Run(ctx context.Context) {
	wait := backoffMin
	for ctx.Err() == nil {
		began := time.Now()
		err := n.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// gRPC retries what fails under it and says only that time ran
			// out: ask the endpoints directly what is wrong.
			err = fmt.Errorf("%w (%v)", err, n.diagnose())
		}
		n.setStatus(false, err.Error())
		n.cfg.Log.Warn("the fleet is out of reach; this host keeps protecting itself and tries again",
			"endpoints", n.cfg.Endpoints, "err", err, "retry_in", wait)
		if time.Since(began) > backoffMax {
			wait = backoffMin // it worked for a while: start over
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, backoffMax)
	}
}

// diagnose says why the endpoints do not answer: a refused connection, a
// TLS handshake failure, a certificate etcd refuses.
func (n *Node) diagnose() error {
	var errs []error
	for _, e := range n.cfg.Endpoints {
		if err := probe(e, n.cfg.TLS); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e, err))
		}
	}
	if len(errs) == 0 {
		return errors.New("the endpoints answer, but not in time")
	}
	return errors.Join(errs...)
}

// probe connects to an endpoint as the client would.
func probe(endpoint string, cfg *tls.Config) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if u.Scheme != "https" {
		return nil
	}
	c := cfg.Clone()
	if c == nil {
		c = &tls.Config{}
	}
	c.ServerName = u.Hostname()
	c.NextProtos = []string{"h2"}
	tc := tls.Client(conn, c)
	_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err
	}
	// A server that refuses the client's certificate says so after the
	// handshake (TLS 1.3): read what it sends first.
	_ = tc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := tc.Read(make([]byte, 1)); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	}
	return nil
}

func (n *Node) client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints: n.cfg.Endpoints, DialTimeout: opTimeout, TLS: n.cfg.TLS,
		Username: n.cfg.Username, Password: n.cfg.Password,
		// etcd refuses pings more often than every 5 s; a silent peer is
		// then noticed within 10, a busy one (a loaded etcd) is given time.
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 5 * time.Second,
		Logger: zap.NewNop(),
	})
}

// session is one connection: membership, a whole read, then the watch,
// until something fails.
func (n *Node) session(ctx context.Context) error {
	cli, err := n.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	member, joined, joinRev, err := n.join(ctx, cli)
	if err != nil {
		n.countError("member")
		return err
	}
	defer func() {
		// A node that stops leaves at once rather than when its lease ends;
		// its blocks stay, on leases of their own.
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = cli.Revoke(c, member)
	}()
	rev := n.resumeFrom(joinRev)
	if rev == 0 {
		if rev, err = n.read(ctx, cli); err != nil {
			n.countError("read")
			return err
		}
	}
	n.setStatus(true, "")
	n.cfg.Log.Info("joined the fleet", "node", n.cfg.Node, "revision", rev, "endpoints", n.cfg.Endpoints)
	signal(n.ownSet) // a round of the last session may have failed half-way

	w := &writes{leases: map[int64]clientv3.LeaseID{}, pending: map[netip.Prefix]pendingWrite{}}
	errs := make(chan error, 4)
	go func() { errs <- n.keepMember(ctx, cli, member, joined) }()
	go func() { errs <- watchConnection(ctx, cli) }()
	go func() { errs <- n.follow(ctx, cli, rev) }()
	go func() { errs <- n.publish(ctx, cli, w) }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-errs:
		return err
	}
}

// watchConnection ends the session when the client's connection to etcd
// fails: the client would retry behind the node's back, and the node
// would claim a connection it has not. A connection that stays failed
// for a moment (not a blip while it reconnects) is lost.
func watchConnection(ctx context.Context, cli *clientv3.Client) error {
	conn := cli.ActiveConnection()
	var failedSince time.Time
	for {
		state := conn.GetState()
		switch state {
		case connectivity.TransientFailure, connectivity.Shutdown:
			if failedSince.IsZero() {
				failedSince = time.Now()
			}
			if time.Since(failedSince) > time.Second {
				return fmt.Errorf("the connection to etcd failed (%s)", state)
			}
		default:
			failedSince = time.Time{}
		}
		wait, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		conn.WaitForStateChange(wait, state)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

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
	m.Version, m.Clock = Version, n.cfg.Now()
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
	writtenAt := time.Now()
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
		case <-silence.C:
			return fmt.Errorf("etcd did not answer for %s", memberTTL)
		case <-tick.C:
			m := n.cfg.Member()
			if sameMember(m, written) && time.Since(writtenAt) < memberRefresh {
				continue
			}
			c, cancel := context.WithTimeout(ctx, opTimeout)
			_, err := n.putMember(c, cli, lease, m)
			cancel()
			if err != nil {
				n.countError("member")
				if slow(ctx, err) {
					continue // the lease says whether etcd is gone
				}
				return err
			}
			written, writtenAt = m, time.Now()
		}
	}
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
			err = n.take(&view, k, kv.Value)
		}
		if err != nil {
			refused = append(refused, refusal{string(kv.Key), kv.ModRevision, err})
		}
	}
	view.Revision = resp.Header.Revision
	n.mu.Lock()
	old := n.view
	n.view = view
	n.status.Revision = view.Revision
	n.compacted = false
	n.mu.Unlock()
	n.refuse(refused)
	if n.cfg.Observe != nil {
		for node, blocks := range view.Blocks {
			for p, b := range blocks {
				if _, had := old.Blocks[node][p]; !had {
					n.cfg.Observe(node, b)
				}
			}
		}
	}
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

// refuse counts what was refused, and logs each key once per revision.
func (n *Node) refuse(refused []refusal) {
	for _, r := range refused {
		reason := RejectOutside
		var rej *Rejection
		if errors.As(r.err, &rej) {
			reason = rej.Reason
		}
		n.mu.Lock()
		n.counts.Rejected[reason]++
		logged := n.rejected[r.key] == r.rev
		n.rejected[r.key] = r.rev
		n.mu.Unlock()
		if !logged {
			n.cfg.Log.Warn("a fleet entry is refused and skipped", "key", r.key, "reason", reason, "err", r.err)
		}
	}
}

// take puts a key and its value into v, or says why not.
func (n *Node) take(v *View, k Key, value []byte) error {
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
		if v.Blocks[k.Node] == nil {
			v.Blocks[k.Node] = map[netip.Prefix]Block{}
		}
		v.Blocks[k.Node][k.Prefix] = b
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

// drop removes a deleted key, or one whose new value is refused, from v.
func (n *Node) drop(v *View, k Key) {
	switch k.Kind {
	case KindMember:
		delete(v.Members, k.Node)
	case KindBlock:
		delete(v.Blocks[k.Node], k.Prefix)
		if len(v.Blocks[k.Node]) == 0 {
			delete(v.Blocks, k.Node)
		}
	case KindAllow:
		delete(v.Allows, k.Prefix)
	case KindUnblock:
		delete(v.Unblocks, k.Prefix)
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
		var observed []Applied
		own := false
		n.mu.Lock()
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			own = own || strings.HasPrefix(key, ownPrefix)
			k, err := n.cfg.Layout.Parse(key)
			if err == nil {
				n.drop(&n.view, k)
				if ev.Type != mvccpb.PUT {
					continue
				}
				err = n.take(&n.view, k, ev.Kv.Value)
			}
			switch {
			case err != nil && ev.Type == mvccpb.PUT:
				refused = append(refused, refusal{key, ev.Kv.ModRevision, err})
			case err == nil && k.Kind == KindBlock && n.cfg.Observe != nil:
				observed = append(observed, Applied{Origin: k.Node, Block: n.view.Blocks[k.Node][k.Prefix]})
			}
		}
		// The view holds every event up to the last one's revision. Not up
		// to the header's: etcd sends a watch that lags its events in
		// batches, each under the header of its current revision.
		if len(resp.Events) > 0 {
			rev = max(rev, resp.Events[len(resp.Events)-1].Kv.ModRevision)
			n.view.Revision, n.status.Revision = rev, rev
		}
		n.mu.Unlock()
		for _, o := range observed {
			n.cfg.Observe(o.Origin, o.Block)
		}
		n.refuse(refused)
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
	n.mu.Lock()
	want := maps.Clone(n.own)
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
// their monotonic reading.
func sameBlock(a, b Block) bool { return sameJSON(a, b) }

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// Admin writes the fleet-wide decisions, under admin/: it needs the
// fleet's admin credential, which etcd's roles give no node. Its decisions
// are rare: each one connects afresh, so none waits on a connection that
// backs off after an outage.
type Admin struct {
	cfg AdminConfig
	now func() time.Time
}

// AdminConfig is the admin credential and where etcd is.
type AdminConfig struct {
	Endpoints []string
	Layout    Layout
	TLS       *tls.Config
	Username  string
	Password  string
}

// NewAdmin returns a writer of fleet-wide decisions.
func NewAdmin(cfg AdminConfig) *Admin { return &Admin{cfg: cfg, now: time.Now} }

// do runs one operation on a connection of its own.
func (a *Admin) do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: a.cfg.Endpoints, DialTimeout: opTimeout, TLS: a.cfg.TLS,
		Username: a.cfg.Username, Password: a.cfg.Password, Logger: zap.NewNop()})
	if err != nil {
		return clientv3.OpResponse{}, err
	}
	defer cli.Close()
	c, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return cli.Do(c, op)
}

func (a *Admin) put(ctx context.Context, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := a.do(ctx, clientv3.OpPut(key, string(data))); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// Allow puts p on the fleet's allowlist.
func (a *Admin) Allow(ctx context.Context, allow Allow) error {
	allow.Version = Version
	return a.put(ctx, a.cfg.Layout.AdminAllow(allow.Prefix), allow)
}

// Disallow takes p off the fleet's allowlist; false when it was not there.
func (a *Admin) Disallow(ctx context.Context, p netip.Prefix) (bool, error) {
	key := a.cfg.Layout.AdminAllow(p)
	resp, err := a.do(ctx, clientv3.OpDelete(key))
	if err != nil {
		return false, fmt.Errorf("delete %s: %w", key, err)
	}
	return resp.Del().Deleted > 0, nil
}

// Unblock ends every node's block of p made until now.
func (a *Admin) Unblock(ctx context.Context, p netip.Prefix, by string) error {
	return a.put(ctx, a.cfg.Layout.AdminUnblock(p), Unblock{Version: Version, Prefix: p, By: by, At: a.now()})
}
