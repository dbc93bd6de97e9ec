package fleet

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"time"
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
	// Own is what this node publishes, read at each round of publishing:
	// Republish says it changed. Nil: what SetOwn set.
	Own func() []Block
	Log *slog.Logger
	Now func() time.Time // nil: time.Now
}

// Timing of a node's work with etcd.
const (
	memberTTL     = 10 * time.Second // the membership lease: a dead node leaves within this
	memberCheck   = 5 * time.Second  // its addresses are looked at, and written when they changed
	memberRefresh = 30 * time.Second // its key is written anyway, 30 to 45 s apart: the clock, for skew
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
	// packs are the prefixes each pack holds, to drop them with it.
	packs map[packRef][]netip.Prefix
	// packed is room to decode packs in, kept from one to the next.
	packed []Block
}

// packRef names one node's pack.
type packRef struct{ node, id string }

func newView() View {
	return View{Members: map[string]Member{}, Blocks: map[string]map[netip.Prefix]Block{},
		Allows: map[netip.Prefix]Allow{}, Unblocks: map[netip.Prefix]Unblock{}, packs: map[packRef][]netip.Prefix{}}
}

func (v View) clone() View {
	out := View{Revision: v.Revision, Members: maps.Clone(v.Members), Allows: maps.Clone(v.Allows),
		Unblocks: maps.Clone(v.Unblocks), Blocks: make(map[string]map[netip.Prefix]Block, len(v.Blocks)),
		packs: maps.Clone(v.packs)}
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
	own      []Block // what SetOwn set
	status   Status
	rejected map[string]int64 // key -> mod revision, logged once
	counts   Counts
	// compacted: etcd's history no longer reaches the view; the next
	// session reads the fleet whole.
	compacted bool
	touched   touched // since the last Take
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
	n := &Node{cfg: cfg, changed: make(chan struct{}, 1), ownSet: make(chan struct{}, 1), view: newView(),
		rejected: map[string]int64{},
		counts:   Counts{Rejected: map[string]uint64{}, Errors: map[string]uint64{}}}
	if n.cfg.Own == nil {
		n.cfg.Own = func() []Block {
			n.mu.Lock()
			defer n.mu.Unlock()
			return n.own
		}
	}
	return n, nil
}

// Changed receives after the view changed; Take what changed then. Changes come in
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
