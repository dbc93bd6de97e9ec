package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/hbf-firewall/hbf/internal/ports"
)

// Connection is a new inbound TCP connection: a SYN that passed, reported
// once per attempt (not per retransmission).
type Connection struct {
	Time    time.Time
	Ifindex int
	Src     netip.AddrPort
	Dst     netip.AddrPort
}

// PortTry is a port a scanner tried, and when it last did.
type PortTry struct {
	Port ports.Port
	Seen time.Time
}

// Scan is a source that tried more than the threshold of distinct ports
// within the window. Ports are the distinct ports of the window, TCP's
// first, each protocol's ascending.
type Scan struct {
	Time    time.Time
	Ifindex int
	Src     netip.Addr // the address of the packet that crossed the threshold
	// Source is what was counted, and blocked: Src's address, or for an
	// off-link IPv6 source its prefix (Settings.IPv6ScanPrefix).
	Source      netip.Prefix
	Dst         netip.Addr
	Ports       []PortTry
	Allowlisted bool // reported only: the source is on the allowlist
	ReportOnly  bool // a UDP datagram crossed with Settings.UDPScans report: reported only
	Blocked     bool // the program blocked the source
	WouldBlock  bool // monitor mode: it would have
	BlockFailed bool // the program could not block it: the block map is full
	RateLimited bool // not blocked: the minute's budget of scan blocks was spent
	Expires     time.Time
}

// LimitExceeded is a source over a connection limit: the connection
// (TCP: completed handshake) that crossed it, or with :drop the first SYN
// or datagram dropped. Reported once a burst, and at each block.
type LimitExceeded struct {
	Time   time.Time
	Src    netip.AddrPort // the client's address and port
	Source netip.Prefix   // what was counted, and blocked: as Scan's
	Dst    netip.Addr
	Port   ports.Port // the limited port
	Count  int        // the limit: Count in any Window
	Window time.Duration

	Allowlisted bool // protected: counted and reported only
	Blocked     bool // the program blocked the source
	WouldBlock  bool // monitor mode: it would have blocked, or dropped
	BlockFailed bool // the block map is full
	RateLimited bool // not blocked: the minute's budget of blocks was spent
	Throttled   bool // a :drop limit: its SYNs or datagrams to the port are dropped
	Expires     time.Time
}

// Event is *Connection, *Scan or *LimitExceeded.
type Event interface{ isEvent() }

func (*Connection) isEvent()    {}
func (*Scan) isEvent()          {}
func (*LimitExceeded) isEvent() {}

// ErrClosed is returned by Read after Close.
var ErrClosed = ringbuf.ErrClosed

// PollInterval bounds how long a connection event waits in the ring buffer:
// the program wakes the reader for connection events only while traffic is
// light (see bpf/events.h).
const PollInterval = 20 * time.Millisecond

// EventReader reads the program's events.
type EventReader struct {
	rd    *ringbuf.Reader
	rec   ringbuf.Record
	clock *clock
}

// Events opens a reader of the program's ring buffer. One reader per
// Dataplane: every event goes to exactly one reader.
func (d *Dataplane) Events() (*EventReader, error) {
	rd, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	return &EventReader{rd: rd, clock: d.clock}, nil
}

// Read blocks until the next event, ctx's end (its error), or Close
// (ErrClosed).
func (r *EventReader) Read(ctx context.Context) (Event, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.rd.SetDeadline(time.Now().Add(PollInterval))
		err := r.rd.ReadInto(&r.rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return decodeEvent(r.rec.RawSample, r.clock.ref())
	}
}

// Poll returns the next event already in the ring, or nil when there is none.
func (r *EventReader) Poll() (Event, error) {
	r.rd.SetDeadline(time.Now())
	err := r.rd.ReadInto(&r.rec)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeEvent(r.rec.RawSample, r.clock.ref())
}

// Close unblocks a pending Read.
func (r *EventReader) Close() error { return r.rd.Close() }

func decodeEvent(b []byte, ref clockRef) (Event, error) {
	// Every event starts with time_ns then the type byte.
	if len(b) < 9 {
		return nil, fmt.Errorf("event of %d bytes is too short", len(b))
	}
	switch b[8] {
	case uint8(hbfEventTypeEVENT_CONNECTION):
		ev, err := decodeConnEvent(b)
		if err != nil {
			return nil, err
		}
		return &Connection{
			Time:    ref.toWall(ev.TimeNs),
			Ifindex: int(ev.Ifindex),
			Src:     netip.AddrPortFrom(eventAddr(ev.Saddr, ev.Family), ev.Sport),
			Dst:     netip.AddrPortFrom(eventAddr(ev.Daddr, ev.Family), ev.Dport),
		}, nil
	case uint8(hbfEventTypeEVENT_SCAN):
		var ev hbfScanEvent
		if err := decodeInto(b, &ev); err != nil {
			return nil, err
		}
		at := ref.toWall(ev.TimeNs)
		n := min(int(ev.Nports), len(ev.Ports))
		ports := make([]PortTry, n)
		for i := range n {
			ports[i] = PortTry{Port: portOf(ev.Ports[i]), Seen: at.Add(-time.Duration(ev.AgesMs[i]) * time.Millisecond)}
		}
		slices.SortFunc(ports, func(a, b PortTry) int { return a.Port.Compare(b.Port) })
		flags := hbfScanEventFlags(ev.Flags)
		src, source, err := sourceOf(ev.Saddr, ev.Prefixlen)
		if err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		return &Scan{
			Time:        at,
			Ifindex:     int(ev.Ifindex),
			Src:         src,
			Source:      source,
			Dst:         eventAddr(ev.Daddr, ev.Family),
			Ports:       ports,
			Allowlisted: flags&hbfScanEventFlagsSCAN_EV_ALLOWLISTED != 0,
			Blocked:     flags&hbfScanEventFlagsSCAN_EV_BLOCKED != 0,
			BlockFailed: flags&hbfScanEventFlagsSCAN_EV_BLOCK_FAILED != 0,
			WouldBlock:  flags&hbfScanEventFlagsSCAN_EV_MONITOR != 0,
			RateLimited: flags&hbfScanEventFlagsSCAN_EV_RATE_LIMITED != 0,
			ReportOnly:  flags&hbfScanEventFlagsSCAN_EV_REPORT_ONLY != 0,
			Expires:     ref.toWall(ev.ExpiresNs),
		}, nil
	case uint8(hbfEventTypeEVENT_LIMIT):
		var ev hbfLimitEvent
		if err := decodeInto(b, &ev); err != nil {
			return nil, err
		}
		src, source, err := sourceOf(ev.Saddr, ev.Prefixlen)
		if err != nil {
			return nil, fmt.Errorf("limit event: %w", err)
		}
		flags := hbfScanEventFlags(ev.Flags)
		return &LimitExceeded{
			Time:        ref.toWall(ev.TimeNs),
			Src:         netip.AddrPortFrom(src, ev.Sport),
			Source:      source,
			Dst:         eventAddr(ev.Daddr, ev.Family),
			Port:        portOf(ev.Port),
			Count:       int(ev.Count),
			Window:      windowOf(ev.WindowMs),
			Allowlisted: flags&hbfScanEventFlagsSCAN_EV_ALLOWLISTED != 0,
			Blocked:     flags&hbfScanEventFlagsSCAN_EV_BLOCKED != 0,
			BlockFailed: flags&hbfScanEventFlagsSCAN_EV_BLOCK_FAILED != 0,
			WouldBlock:  flags&hbfScanEventFlagsSCAN_EV_MONITOR != 0,
			RateLimited: flags&hbfScanEventFlagsSCAN_EV_RATE_LIMITED != 0,
			Throttled:   flags&hbfScanEventFlagsSCAN_EV_THROTTLED != 0,
			Expires:     ref.toWall(ev.ExpiresNs),
		}, nil
	}
	return nil, fmt.Errorf("event of unknown type %d", b[8])
}

// sourceOf reads an event's source address and the source it counted (the
// address, or an IPv6 prefix of prefixlen bits). The block is keyed by the
// IPv4 address even when the packet came as IPv4-mapped IPv6, so that is
// the address reported.
func sourceOf(a hbfAddr, prefixlen uint8) (netip.Addr, netip.Prefix, error) {
	src := netip.AddrFrom16(a.B).Unmap()
	bits := int(prefixlen)
	if bits == 0 || bits > 128 {
		bits = 128
	}
	if src.Is4() {
		bits = 32 // the program aggregates IPv6 only
	}
	source, err := src.Prefix(bits)
	if err != nil {
		return src, source, fmt.Errorf("prefix length %d of %v: %w", prefixlen, src, err)
	}
	return src, source, nil
}

// decodeConnEvent reads a connection event field by field: the reader's
// hot path, where encoding/binary's reflection cost more than the rest.
// TestConnEventDecoding holds it to binary.Decode of the generated type.
func decodeConnEvent(b []byte) (hbfConnEvent, error) {
	var ev hbfConnEvent
	if len(b) < int(unsafe.Sizeof(ev)) {
		return ev, fmt.Errorf("event of %d bytes is shorter than its type (%d)", len(b), unsafe.Sizeof(ev))
	}
	ne := binary.NativeEndian
	ev.TimeNs = ne.Uint64(b[0:])
	ev.Type, ev.Family = b[8], b[9]
	ev.Ifindex = ne.Uint32(b[12:])
	copy(ev.Saddr.B[:], b[16:32])
	copy(ev.Daddr.B[:], b[32:48])
	ev.Sport, ev.Dport = ne.Uint16(b[48:]), ne.Uint16(b[50:])
	return ev, nil
}

func decodeInto[T any](b []byte, v *T) error {
	if len(b) < int(unsafe.Sizeof(*v)) {
		return fmt.Errorf("event of %d bytes is shorter than its type (%d)", len(b), unsafe.Sizeof(*v))
	}
	_, err := binary.Decode(b, binary.NativeEndian, v)
	if err != nil {
		return fmt.Errorf("decode event: %w", err)
	}
	return nil
}

// portOf turns a port as the tracker keeps it into a Port.
func portOf(key uint32) ports.Port {
	p := ports.Port{Num: uint16(key)}
	if key&uint32(hbfPortProtoPORT_UDP) != 0 {
		p.Proto = ports.UDP
	}
	return p
}

// eventAddr turns an address as the program stores it back into the packet's
// own family.
func eventAddr(a hbfAddr, family uint8) netip.Addr {
	addr := netip.AddrFrom16(a.B)
	if family == 4 {
		return addr.Unmap()
	}
	return addr
}
