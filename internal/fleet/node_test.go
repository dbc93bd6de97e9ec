package fleet

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/etcdtest"
)

// proxy stands between a node and etcd, so that a test can cut one node
// off while the others go on.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: strings.TrimPrefix(target, "http://")}
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
	})
	go p.serve()
	return p
}

func (p *proxy) endpoint() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

// setCut cuts (or restores) the way to etcd: open connections close, new
// ones are refused.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

type testNode struct {
	*Node
	cancel context.CancelFunc
	done   chan struct{}
}

func startNode(t *testing.T, name string, endpoint string, addrs ...string) *testNode {
	t.Helper()
	return startNodeAs(t, name, endpoint, "", "", addrs...)
}

// startNodeAs starts a node that authenticates to etcd as user.
func startNodeAs(t *testing.T, name, endpoint, user, password string, addrs ...string) *testNode {
	t.Helper()
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	n, err := NewNode(Config{Endpoints: []string{endpoint}, Layout: testLayout, Node: name, Username: user, Password: password,
		Member: func() Member { return Member{HBF: "test", Addrs: as} },
		Log:    slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{Node: n, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tn.done)
		n.Run(ctx)
	}()
	t.Cleanup(tn.stop)
	return tn
}

func (n *testNode) stop() {
	n.cancel()
	<-n.done
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitView waits until the node's view satisfies cond.
func waitView(t *testing.T, n *testNode, what string, cond func(View) bool) View {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		if v := n.View(); cond(v) {
			return v
		}
		select {
		case <-n.Changed():
		case <-deadline:
			t.Fatalf("after 15 s, %s: %+v", what, n.View())
		case <-time.After(100 * time.Millisecond): // expiry is read, not notified
		}
	}
}

func waitConnected(t *testing.T, n *testNode, want bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n.Status().Connected != want {
		if time.Now().After(deadline) {
			t.Fatalf("connected %v after 30 s, want %v: %+v", !want, want, n.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	scanner = netip.MustParsePrefix("198.51.100.66/32")
	other   = netip.MustParsePrefix("203.0.113.0/24")
)

func block(p netip.Prefix, created time.Time, d time.Duration) Block {
	b := Block{Prefix: p, Origin: "scan", Reason: "port scan", Created: created,
		Ports: []Port{{Port: 22, Proto: "tcp", Seen: created}}}
	if d > 0 {
		b.ExpiresAt = created.Add(d)
	}
	return b
}

func has(v View, node string, p netip.Prefix) bool {
	_, ok := v.Blocks[node][p]
	return ok
}

func TestNodesSeeEachOthersBlocksAndMembers(t *testing.T) {
	etcd := etcdtest.Start(t, etcdtest.Options{})
	a := startNode(t, "a", etcd.Endpoint(), "192.0.2.1")
	b := startNode(t, "b", etcd.Endpoint(), "192.0.2.2")
	now := time.Now().Truncate(time.Second)
	a.SetOwn([]Block{block(scanner, now, time.Hour), block(other, now, 0)})
	v := waitView(t, b, "b sees a's blocks", func(v View) bool { return has(v, "a", scanner) && has(v, "a", other) })
	if got := v.Blocks["a"][scanner]; !got.ExpiresAt.Equal(now.Add(time.Hour)) || len(got.Ports) != 1 {
		t.Errorf("the block as b reads it: %+v", got)
	}
	v = waitView(t, b, "b sees a as a member", func(v View) bool { return len(v.Members["a"].Addrs) == 1 })
	if v.Members["a"].Addrs[0] != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("a's membership: %+v", v.Members["a"])
	}
	for deadline := time.Now().Add(5 * time.Second); a.Counts().Published < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // counted once the write returns, maybe after b saw it
	}
	if !b.Status().Connected || a.Counts().Published != 2 {
		t.Errorf("status %+v, counts %+v", b.Status(), a.Counts())
	}

	// What a publishes follows SetOwn, and is put back when removed from
	// outside.
	a.SetOwn([]Block{block(scanner, now, time.Hour)})
	waitView(t, b, "the dropped block gone", func(v View) bool { return !has(v, "a", other) })
	published := a.Counts().Published
	etcd.MustCtl("del", "--prefix", testLayout.NodeBlocks("a"))
	waitView(t, b, "the deleted block republished", func(v View) bool {
		return has(v, "a", scanner) && a.Counts().Published > published
	})

	// A member that stops leaves the fleet; its blocks stay until they
	// expire.
	a.stop()
	waitView(t, b, "a left, its block stays", func(v View) bool {
		_, member := v.Members["a"]
		return !member && has(v, "a", scanner)
	})
}

// An unblock of the fleet ends the blocks made before it: a node does not
// publish them, whenever it learns of them.
func TestUnblocksStopOlderBlocksFromBeingPublished(t *testing.T) {
	etcd := etcdtest.Start(t, etcdtest.Options{})
	a := startNode(t, "a", etcd.Endpoint())
	at := time.Now().Truncate(time.Second)
	etcd.MustCtl("put", testLayout.AdminUnblock(scanner),
		`{"version":1,"prefix":"198.51.100.66/32","by":"b (uid 0)","at":"`+at.Format(time.RFC3339)+`"}`)
	waitView(t, a, "a sees the unblock", func(v View) bool { _, ok := v.Unblocks[scanner]; return ok })
	a.SetOwn([]Block{block(scanner, at.Add(-time.Minute), time.Hour), block(other, at.Add(-time.Minute), time.Hour)})
	waitView(t, a, "the other block published", func(v View) bool { return has(v, "a", other) })
	if has(a.View(), "a", scanner) {
		t.Error("a block made before the fleet's unblock of it was published")
	}
	a.SetOwn([]Block{block(scanner, at.Add(time.Minute), time.Hour)})
	waitView(t, a, "a block made after the unblock published", func(v View) bool { return has(v, "a", scanner) })
}

// Bad data in etcd is skipped and counted by reason, never applied, never
// fatal.
func TestBadEntriesAreRefusedAndCounted(t *testing.T) {
	etcd := etcdtest.Start(t, etcdtest.Options{})
	b := startNode(t, "b", etcd.Endpoint())
	waitConnected(t, b, true)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for key, value := range map[string]string{
		"/hbf/blocks/x/198.51.100.1%2F32": `not json`,
		"/hbf/blocks/x/198.51.100.2%2F32": `{"version":9,"prefix":"198.51.100.2/32"}`,
		"/hbf/blocks/x/198.51.100.3%2F32": `{"version":1,"prefix":"198.51.100.300/32","created":"` + past + `"}`,
		"/hbf/blocks/x/198.51.100.4%2F32": `{"version":1,"prefix":"198.51.100.5/32","created":"` + past + `"}`,
		"/hbf/blocks/x/198.51.100.6%2F32": `{"version":1,"prefix":"198.51.100.6/32","created":"` + past + `","expires_at":"` + past + `"}`,
		"/hbf/nowhere/198.51.100.7%2F32":  `{"version":1,"prefix":"198.51.100.7/32"}`,
	} {
		etcd.MustCtl("put", key, value)
	}
	// The good entry last: the watch delivers in order, so once it is in
	// the view every bad one before it has been counted.
	etcd.MustCtl("put", "/hbf/blocks/x/198.51.100.8%2F32",
		`{"version":1,"prefix":"198.51.100.8/32","origin":"scan","created":"`+past+`","expires_at":"`+future+`"}`)
	v := waitView(t, b, "the good entry read", func(v View) bool { return has(v, "x", netip.MustParsePrefix("198.51.100.8/32")) })
	if n := len(v.Blocks["x"]); n != 1 {
		t.Errorf("%d blocks of x applied, want only the good one: %+v", n, v.Blocks["x"])
	}
	got := b.Counts().Rejected
	for reason, want := range map[string]uint64{RejectNotJSON: 1, RejectVersion: 1, RejectPrefix: 1, RejectMismatch: 1,
		RejectExpired: 1, RejectOutside: 1} {
		if got[reason] != want {
			t.Errorf("rejected %s: %d, want %d (all: %v)", reason, got[reason], want, got)
		}
	}
}

// A node cut off while the others change the fleet catches up when it is
// back: from the revision it had reached, or, when etcd compacted its
// history past it (here: at the very revision of the change, whose
// deletion etcd then no longer holds), by reading the fleet whole. What
// was removed meanwhile is removed from its view, what was added is there.
func TestNodeCutOffCatchesUp(t *testing.T) {
	for _, compact := range []bool{false, true} {
		t.Run(map[bool]string{false: "resumed", true: "past a compaction"}[compact], func(t *testing.T) {
			etcd := etcdtest.Start(t, etcdtest.Options{})
			a := startNode(t, "a", etcd.Endpoint())
			way := newProxy(t, etcd.Endpoint())
			b := startNode(t, "b", way.endpoint())
			now := time.Now().Truncate(time.Second)
			a.SetOwn([]Block{block(scanner, now, time.Hour)})
			waitView(t, b, "b sees the first block", func(v View) bool { return has(v, "a", scanner) })

			way.setCut(true)
			waitConnected(t, b, false)
			a.SetOwn([]Block{block(other, now, time.Hour)})
			waitView(t, a, "a's change made", func(v View) bool { return has(v, "a", other) && !has(v, "a", scanner) })
			if compact {
				etcd.Compact()
			}

			way.setCut(false)
			waitView(t, b, "b caught up", func(v View) bool { return has(v, "a", other) && !has(v, "a", scanner) })
			waitConnected(t, b, true)
		})
	}
}

// Started with etcd out of reach, a node says so and joins once it
// answers; what it publishes meanwhile goes out then.
func TestNodeStartedWithoutEtcdJoinsLater(t *testing.T) {
	etcd := etcdtest.Start(t, etcdtest.Options{})
	way := newProxy(t, etcd.Endpoint())
	way.setCut(true)
	a := startNode(t, "a", way.endpoint())
	b := startNode(t, "b", etcd.Endpoint())
	a.SetOwn([]Block{block(scanner, time.Now(), time.Hour)})
	deadline := time.Now().Add(10 * time.Second)
	for a.Status().Why == "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if st := a.Status(); st.Connected || st.Why == "" {
		t.Errorf("cut off from the start: %+v, want not connected, with why", st)
	}
	way.setCut(false)
	waitView(t, b, "a's block, published once a joined", func(v View) bool { return has(v, "a", scanner) })
}

// etcd killed and started again: the nodes reconnect, and what was
// published while it was down is there.
func TestNodesSurviveAnEtcdRestart(t *testing.T) {
	etcd := etcdtest.Start(t, etcdtest.Options{})
	a := startNode(t, "a", etcd.Endpoint())
	b := startNode(t, "b", etcd.Endpoint())
	waitConnected(t, a, true)
	waitConnected(t, b, true)
	etcd.Kill()
	a.SetOwn([]Block{block(scanner, time.Now(), time.Hour)})
	etcd.Restart()
	waitView(t, b, "the block published across the restart", func(v View) bool { return has(v, "a", scanner) })
	waitConnected(t, a, true)
}

// nodeUser is the etcd user of a node: it reads the fleet and writes its
// own subtree and membership key, nothing else.
func nodeUser(name string) etcdtest.User {
	return etcdtest.User{Name: name, Password: name + "-secret", Read: []string{"/hbf/"},
		Write: []string{"/hbf/blocks/" + name + "/", "/hbf/members/" + name}}
}

// With etcd's roles, a node can write its own keys only: not another
// node's, not the fleet-wide decisions.
func TestRolesConfineANodeToItsSubtree(t *testing.T) {
	etcd := etcdtest.Start(t, etcdtest.Options{})
	etcd.EnableAuth(nodeUser("a"), nodeUser("b"))
	a := startNodeAs(t, "a", etcd.Endpoint(), "a", "a-secret")
	b := startNodeAs(t, "b", etcd.Endpoint(), "b", "b-secret")
	a.SetOwn([]Block{block(scanner, time.Now(), time.Hour)})
	waitView(t, b, "b reads a's block", func(v View) bool { return has(v, "a", scanner) && len(v.Members) == 2 })
	for _, args := range [][]string{
		{"put", testLayout.Block("b", other), "{}"},
		{"put", testLayout.Member("b"), "{}"},
		{"put", testLayout.AdminAllow(other), "{}"},
		{"del", testLayout.Block("b", scanner)},
		{"del", "/hbf/", "--prefix"},
	} {
		if out, err := etcd.CtlAs("a", "a-secret", args...); err == nil || !strings.Contains(out, "permission denied") {
			t.Errorf("etcdctl %v as a: %v, %q; want permission denied", args, err, out)
		}
	}
	c := startNodeAs(t, "c", etcd.Endpoint(), "a", "wrong")
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().Why == "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if st := c.Status(); st.Connected || !strings.Contains(st.Why, "authentication failed") {
		t.Errorf("a node with a wrong password: %+v, want local-only, saying why", st)
	}
}

// What a node wrote counts as written until its watch brings it back, so
// a watch that lags does not make the node write it again; once the view
// has reached the write, the view decides.
func TestWritesTheViewHasNotSeenCountAsDone(t *testing.T) {
	a, b := block(scanner, t0, time.Hour), block(other, t0, time.Hour)
	w := &writes{pending: map[netip.Prefix]pendingWrite{
		scanner: {block: &a, revision: 10},
		other:   {revision: 11}, // deleted
	}}
	view := map[netip.Prefix]Block{other: b}
	if got := w.known(view, 9); len(got) != 1 || !sameBlock(got[scanner], a) {
		t.Errorf("before the view reaches the writes: %v, want %v alone", got, scanner)
	}
	if len(view) != 1 {
		t.Errorf("known changed the view: %v", view)
	}
	if got := w.known(nil, 10); len(got) != 0 {
		t.Errorf("the view at the put, without it (since removed): %v, want nothing", got)
	}
	if got := w.known(view, 11); len(got) != 1 || !sameBlock(got[other], b) || len(w.pending) != 0 {
		t.Errorf("the view past every write: %v, pending %v; want the view's", got, w.pending)
	}
}

// keysOf lists the keys of node's subtree in etcd.
func keysOf(etcd *etcdtest.Server, node string) []string {
	return strings.Fields(etcd.MustCtl("get", "--prefix", "--keys-only", testLayout.NodeBlocks(node)))
}

// Blocks published together go out in one key, and each block of it
// changes or leaves alone.
func TestBlocksPublishedTogetherShareAKey(t *testing.T) {
	etcd := etcdtest.Start(t, etcdtest.Options{})
	a := startNode(t, "a", etcd.Endpoint())
	b := startNode(t, "b", etcd.Endpoint())
	waitView(t, a, "a sees both members", func(v View) bool { return len(v.Members) == 2 })
	now := time.Now().Truncate(time.Second)
	third := netip.MustParsePrefix("2001:db8::/48")
	a.SetOwn([]Block{block(scanner, now, time.Hour), block(other, now, time.Hour), block(third, now, 0)})
	waitView(t, b, "b sees a's three blocks", func(v View) bool { return len(v.Blocks["a"]) == 3 })
	if keys := keysOf(etcd, "a"); len(keys) != 1 || !strings.Contains(keys[0], "/pack-") {
		t.Fatalf("a's keys: %v, want one pack", keys)
	}

	// One block longer, one gone: the pack is written again, and only
	// the block gone leaves b's view.
	longer := block(scanner, now, 2*time.Hour)
	a.SetOwn([]Block{longer, block(third, now, 0)})
	v := waitView(t, b, "b sees the change", func(v View) bool {
		return len(v.Blocks["a"]) == 2 && v.Blocks["a"][scanner].ExpiresAt.Equal(longer.ExpiresAt)
	})
	if !has(v, "a", third) {
		t.Errorf("b's view of a: %+v", v.Blocks["a"])
	}
	// One block changed alone goes to a key of its own.
	if keys := keysOf(etcd, "a"); len(keys) != 2 {
		t.Errorf("a's keys: %v, want the pack and one block", keys)
	}
	a.SetOwn(nil)
	waitView(t, b, "a's blocks gone", func(v View) bool { return len(v.Blocks["a"]) == 0 })
	if keys := keysOf(etcd, "a"); len(keys) != 0 {
		t.Errorf("a's keys after it published nothing: %v", keys)
	}
}

// A member of an hbf that does not read packs gets every block under a
// key of its own, those in packs before it joined too.
func TestPacksWaitForEveryMemberToReadThem(t *testing.T) {
	etcd := etcdtest.Start(t, etcdtest.Options{})
	a := startNode(t, "a", etcd.Endpoint())
	waitView(t, a, "a sees itself", func(v View) bool { return len(v.Members) == 1 })
	now := time.Now().Truncate(time.Second)
	a.SetOwn([]Block{block(scanner, now, time.Hour), block(other, now, time.Hour)})
	waitView(t, a, "a's pack", func(View) bool { return len(keysOf(etcd, "a")) == 1 })

	old := `{"version":1,"hbf":"v0.9","addrs":[],"clock":"` + now.UTC().Format(time.RFC3339) + `"}`
	etcd.MustCtl("put", testLayout.Member("old"), old)
	waitView(t, a, "a writes each block alone", func(v View) bool {
		keys := keysOf(etcd, "a")
		return len(keys) == 2 && !strings.Contains(strings.Join(keys, " "), "/pack-") && len(v.Blocks["a"]) == 2
	})
	third := netip.MustParsePrefix("2001:db8::/48")
	a.SetOwn([]Block{block(scanner, now, time.Hour), block(other, now, time.Hour), block(third, now, time.Hour)})
	waitView(t, a, "the new block alone too", func(v View) bool { return has(v, "a", third) })
	if keys := keysOf(etcd, "a"); len(keys) != 3 {
		t.Errorf("a's keys: %v", keys)
	}
}
