package natports

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cloudflare/ipvs"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

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

// Generation is the nftables ruleset's generation: the kernel moves it on
// every commit, so an unchanged generation means an unchanged ruleset. One
// small message, whatever the ruleset holds: polling it costs the host
// nothing, where a change monitor makes the kernel write a notification
// for every element of every set anyone loads.
func (r *Reader) Generation() (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: r.netns})
	if err != nil {
		return 0, fmt.Errorf("open nftables: %w", err)
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		// struct nfgenmsg: any family, version 0, resource 0
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("read the nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("read the nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("read the nftables generation: the kernel's answer holds none")
}
