package natports

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cloudflare/ipvs"
	"github.com/google/nftables"

	"github.com/hbf-firewall/hbf/internal/ports"
)

// Snapshot is what the host serves without sockets at one moment.
type Snapshot struct {
	Ports []ports.Port // sorted, without duplicates
	// Unread names rules hbf cannot read, whose ports it therefore counts
	// as closed: iptables-legacy NAT rules. "": none.
	Unread string
}

// Equal reports whether two snapshots hold the same.
func (s Snapshot) Equal(o Snapshot) bool {
	return slices.Equal(s.Ports, o.Ports) && s.Unread == o.Unread
}

// Reader reads snapshots of one network namespace: the process's, or the
// one whose file descriptor it was given.
type Reader struct {
	netns int // 0: the current one
	// legacyTables is iptables-legacy's list of tables in use.
	legacyTables string
}

// NewReader reads the current network namespace.
func NewReader() *Reader { return &Reader{legacyTables: "/proc/net/ip_tables_names"} }

// Read takes a snapshot: the ports of nftables' DNAT rules (iptables-nft's
// among them) and of IPVS virtual services.
func (r *Reader) Read() (Snapshot, error) {
	var s Snapshot
	nat, err := r.nftablesPorts()
	if err != nil {
		return s, err
	}
	virtual, err := r.ipvsPorts()
	if err != nil {
		return s, err
	}
	s.Ports = append(nat, virtual...)
	slices.SortFunc(s.Ports, ports.Port.Compare)
	s.Ports = slices.Compact(s.Ports)
	if r.legacyNAT() {
		s.Unread = "iptables-legacy has a nat table, whose rules hbf cannot read: ports they forward count as closed"
	}
	return s, nil
}

func (r *Reader) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if r.netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(r.netns))
	}
	return nftables.New(opts...)
}

// nftablesPorts reads every table's chains and rules.
func (r *Reader) nftablesPorts() ([]ports.Port, error) {
	c, err := r.conn()
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	type tableKey struct {
		name   string
		family nftables.TableFamily
	}
	tables := map[tableKey]*table{}
	for _, ch := range chains {
		k := tableKey{ch.Table.Name, ch.Table.Family}
		t := tables[k]
		if t == nil {
			tbl := ch.Table
			t = &table{chains: map[string][]*nftables.Rule{}, set: func(name string) ([]portRange, bool) {
				s, err := c.GetSetByName(tbl, name)
				if err != nil {
					return nil, false
				}
				elems, err := c.GetSetElements(s)
				if err != nil {
					return nil, false
				}
				return setRanges(s, elems)
			}}
			tables[k] = t
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("list the rules of nftables chain %s %s: %w", ch.Table.Name, ch.Name, err)
		}
		t.chains[ch.Name] = rules
	}
	var out []ports.Port
	for _, t := range tables {
		out = append(out, t.served()...)
	}
	return out, nil
}

// ipvsPorts reads the IPVS virtual services' ports. A kernel without IPVS
// has none. Firewall-mark services have no port of their own: their rules
// mark the packets, and are not read.
func (r *Reader) ipvsPorts() ([]ports.Port, error) {
	if r.netns != 0 {
		return nil, nil // the IPVS client opens the process's namespace only
	}
	c, err := ipvs.New()
	if err != nil {
		return nil, nil // no IPVS in this kernel
	}
	svcs, err := c.Services()
	if err != nil {
		return nil, fmt.Errorf("list IPVS services: %w", err)
	}
	var out []ports.Port
	for _, s := range svcs {
		switch {
		case s.FWMark != 0 || s.Port == 0:
		case s.Protocol == ipvs.TCP:
			out = append(out, ports.Port{Num: s.Port, Proto: ports.TCP})
		case s.Protocol == ipvs.UDP:
			out = append(out, ports.Port{Num: s.Port, Proto: ports.UDP})
		}
	}
	return out, nil
}

// legacyNAT reports whether iptables-legacy has a nat table here.
func (r *Reader) legacyNAT() bool {
	b, err := os.ReadFile(r.legacyTables)
	if err != nil {
		return false
	}
	return slices.Contains(strings.Fields(string(b)), "nat")
}

// Changes notifies of nftables changes (a rule, chain, table or set
// added or removed): a cue to Read again.
type Changes struct {
	c       chan struct{}
	monitor *nftables.Monitor
}

// Subscribe follows nftables' changes in the reader's namespace.
func (r *Reader) Subscribe() (*Changes, error) {
	c, err := r.conn()
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	m := nftables.NewMonitor(nftables.WithMonitorEventBuffer(64))
	events, err := c.AddMonitor(m)
	if err != nil {
		return nil, fmt.Errorf("follow nftables changes: %w", err)
	}
	ch := &Changes{c: make(chan struct{}, 1), monitor: m}
	go func() {
		defer close(ch.c)
		for range events {
			select {
			case ch.c <- struct{}{}:
			default: // one pending cue covers any number of changes
			}
		}
	}()
	return ch, nil
}

// C delivers a value after changes; it is closed when they are no
// longer followed.
func (ch *Changes) C() <-chan struct{} { return ch.c }

// Close stops following changes.
func (ch *Changes) Close() error {
	if err := ch.monitor.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}
