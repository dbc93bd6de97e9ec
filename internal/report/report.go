// Package report writes hbf's events, one line each, as text for people or
// as JSON lines for programs.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/hbf-firewall/hbf/internal/limit"
	"github.com/hbf-firewall/hbf/internal/ports"
)

// Format of the event lines.
type Format string

const (
	Text Format = "text"
	JSON Format = "json"
)

// ParseFormat accepts text and json.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Text, JSON:
		return f, nil
	}
	return "", fmt.Errorf("%q is not a log format: use text or json", s)
}

// Event is *Connection, *Scan, *Limit, *Block, *Unblock, *Allow, *Disallow or
// *Suppressed.
type Event interface{ isEvent() }

// Connection is a new inbound TCP connection.
type Connection struct {
	Time  time.Time
	Iface string
	Src   netip.AddrPort
	Dst   netip.AddrPort
}

// Scan is a port scan the data plane detected.
type Scan struct {
	Time        time.Time
	Iface       string
	Src         netip.Addr
	Dst         netip.Addr
	Ports       []ports.Port // TCP's first, each protocol's ascending
	Allowlisted bool         // reported, not blocked
	WouldBlock  bool         // monitor mode: reported, not blocked
	ReportOnly  bool         // a UDP scan with --udp-scans report: reported, not blocked
	RateLimited bool         // not blocked: the minute's budget of scan blocks was spent
	// Prefix is what was counted (and blocked) when wider than Src: an
	// off-link IPv6 scanner's /64. Invalid otherwise.
	Prefix netip.Prefix
}

// Limit is a source over a connection limit: Count connections (UDP:
// datagrams) to Port in any Window, and this one more.
type Limit struct {
	Time        time.Time
	Src         netip.Addr
	Dst         netip.Addr
	Port        ports.Port
	Count       int
	Window      time.Duration
	Allowlisted bool // reported, not blocked
	WouldBlock  bool // monitor mode: reported, not blocked nor dropped
	RateLimited bool // not blocked: the minute's budget of kernel blocks was spent
	Throttled   bool // a :drop limit: its connections to the port are dropped, it is not blocked
	// Prefix is what was counted (and blocked) when wider than Src, as
	// for a scan.
	Prefix netip.Prefix
}

// Block is a new block.
type Block struct {
	Time     time.Time
	Prefix   netip.Prefix
	Reason   string
	Duration time.Duration // 0: permanent
	Expires  time.Time     // zero: permanent
}

// Unblock is a block an operator removed.
type Unblock struct {
	Time   time.Time
	Prefix netip.Prefix
	By     string
}

// Allow is a new allowlist entry.
type Allow struct {
	Time     time.Time
	Prefix   netip.Prefix
	Reason   string
	Duration time.Duration // 0: permanent
	Expires  time.Time
	By       string
}

// Disallow is an allowlist entry an operator removed.
type Disallow struct {
	Time   time.Time
	Prefix netip.Prefix
	By     string
}

// Suppressed counts connection lines held back by the rate limit.
type Suppressed struct {
	Time  time.Time
	Count int
}

func (*Suppressed) isEvent() {}
func (*Connection) isEvent() {}
func (*Scan) isEvent()       {}
func (*Limit) isEvent()      {}
func (*Block) isEvent()      {}
func (*Unblock) isEvent()    {}
func (*Allow) isEvent()      {}
func (*Disallow) isEvent()   {}

// Writer writes events to an io.Writer; safe for concurrent use.
type Writer struct {
	mu     sync.Mutex
	w      io.Writer
	format Format
	buf    []byte
}

// NewWriter returns a Writer of the given format.
func NewWriter(w io.Writer, format Format) *Writer {
	return &Writer{w: w, format: format}
}

// Write writes one event as one line.
func (w *Writer) Write(ev Event) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var err error
	if w.format == JSON {
		w.buf, err = AppendJSON(w.buf[:0], ev)
	} else {
		w.buf = appendText(w.buf[:0], ev)
	}
	if err != nil {
		return err
	}
	_, err = w.w.Write(append(w.buf, '\n'))
	return err
}

const textTime = "2006-01-02 15:04:05"

func appendText(b []byte, ev Event) []byte {
	switch ev := ev.(type) {
	case *Connection:
		b = ev.Time.Local().AppendFormat(b, textTime)
		return fmt.Appendf(b, ": New connection: %s -> %s", ev.Src, ev.Dst)
	case *Scan:
		b = ev.Time.Local().AppendFormat(b, textTime)
		b = fmt.Appendf(b, ": Port scan detected: %s -> %s on ports %s", ev.Src, ev.Dst, ports.Join(ev.Ports))
		if ev.Prefix.IsValid() {
			b = fmt.Appendf(b, " (counted over %s)", ev.Prefix)
		}
		if ev.RateLimited {
			b = append(b, " (block rate limit reached: not blocked)"...)
		}
		if ev.Allowlisted {
			b = append(b, " (allowlisted, not blocked)"...)
		}
		if ev.WouldBlock {
			b = append(b, " (monitor mode: would block)"...)
		}
		if ev.ReportOnly {
			b = append(b, " (UDP scans are reported only: not blocked)"...)
		}
		return b
	case *Limit:
		b = ev.Time.Local().AppendFormat(b, textTime)
		what := "connections"
		if ev.Port.Proto == ports.UDP {
			what = "datagrams"
		}
		b = fmt.Appendf(b, ": Connection limit: %s -> %s port %d/%s, %d %s in %s", ev.Src, ev.Dst,
			ev.Port.Num, ev.Port.Proto, ev.Count+1, what, limit.WindowString(ev.Window))
		if ev.Prefix.IsValid() {
			b = fmt.Appendf(b, " (counted over %s)", ev.Prefix)
		}
		switch {
		case ev.Allowlisted:
			b = append(b, " (allowlisted, not limited)"...)
		case ev.WouldBlock:
			b = append(b, " (monitor mode: would limit)"...)
		case ev.RateLimited:
			b = append(b, " (block rate limit reached: not blocked)"...)
		case ev.Throttled:
			b = fmt.Appendf(b, " (throttled: its %s to the port are dropped)", what)
		}
		return b
	case *Block:
		b = ev.Time.Local().AppendFormat(b, textTime)
		if ev.Duration == 0 {
			return fmt.Appendf(b, ": Blocked %s permanently: %s", PrefixString(ev.Prefix), ev.Reason)
		}
		return fmt.Appendf(b, ": Blocked %s for %s: %s", PrefixString(ev.Prefix), ev.Duration, ev.Reason)
	case *Unblock:
		b = ev.Time.Local().AppendFormat(b, textTime)
		return fmt.Appendf(b, ": Unblocked %s (%s)", PrefixString(ev.Prefix), ev.By)
	case *Allow:
		b = ev.Time.Local().AppendFormat(b, textTime)
		if ev.Duration == 0 {
			b = fmt.Appendf(b, ": Allowed %s permanently", PrefixString(ev.Prefix))
		} else {
			b = fmt.Appendf(b, ": Allowed %s for %s", PrefixString(ev.Prefix), ev.Duration)
		}
		if ev.Reason != "" {
			b = fmt.Appendf(b, ": %s", ev.Reason)
		}
		return fmt.Appendf(b, " (%s)", ev.By)
	case *Disallow:
		b = ev.Time.Local().AppendFormat(b, textTime)
		return fmt.Appendf(b, ": Disallowed %s (%s)", PrefixString(ev.Prefix), ev.By)
	case *Suppressed:
		b = ev.Time.Local().AppendFormat(b, textTime)
		return fmt.Appendf(b, ": %d connection lines suppressed", ev.Count)
	}
	return fmt.Appendf(b, "unknown event %T", ev)
}

// PrefixString writes a single-address prefix as the bare address.
func PrefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

const jsonTime = "2006-01-02T15:04:05.000Z07:00" // RFC 3339 with milliseconds

type jsonConnection struct {
	Time    string `json:"time"`
	Event   string `json:"event"`
	Iface   string `json:"iface,omitempty"`
	Src     string `json:"src"`
	SrcPort uint16 `json:"src_port"`
	Dst     string `json:"dst"`
	DstPort uint16 `json:"dst_port"`
}

type jsonScan struct {
	Time        string   `json:"time"`
	Event       string   `json:"event"`
	Iface       string   `json:"iface,omitempty"`
	Src         string   `json:"src"`
	Dst         string   `json:"dst"`
	Ports       []uint16 `json:"ports"` // TCP's, as before UDP counted
	UDPPorts    []uint16 `json:"udp_ports,omitempty"`
	Allowlisted bool     `json:"allowlisted,omitempty"`
	WouldBlock  bool     `json:"would_block,omitempty"`
	ReportOnly  bool     `json:"report_only,omitempty"`
	RateLimited bool     `json:"rate_limited,omitempty"`
	Prefix      string   `json:"prefix,omitempty"`
}

type jsonLimit struct {
	Time        string `json:"time"`
	Event       string `json:"event"`
	Src         string `json:"src"`
	Dst         string `json:"dst"`
	Port        uint16 `json:"port"`
	Proto       string `json:"proto"`
	Limit       int    `json:"limit"`
	Window      string `json:"window"`
	Allowlisted bool   `json:"allowlisted,omitempty"`
	WouldBlock  bool   `json:"would_block,omitempty"`
	RateLimited bool   `json:"rate_limited,omitempty"`
	Throttled   bool   `json:"throttled,omitempty"`
	Prefix      string `json:"prefix,omitempty"`
}

type jsonBlock struct {
	Time     string `json:"time"`
	Event    string `json:"event"`
	Prefix   string `json:"prefix"`
	Reason   string `json:"reason,omitempty"`
	Duration string `json:"duration,omitempty"`
	Expires  string `json:"expires,omitempty"`
	By       string `json:"by,omitempty"`
}

// AppendJSON appends ev as one JSON object (no newline).
func AppendJSON(b []byte, ev Event) ([]byte, error) {
	var v any
	switch ev := ev.(type) {
	case *Connection:
		v = jsonConnection{
			Time: ev.Time.Format(jsonTime), Event: "connection", Iface: ev.Iface,
			Src: ev.Src.Addr().String(), SrcPort: ev.Src.Port(),
			Dst: ev.Dst.Addr().String(), DstPort: ev.Dst.Port(),
		}
	case *Scan:
		js := jsonScan{
			Time: ev.Time.Format(jsonTime), Event: "portscan", Iface: ev.Iface,
			Src: ev.Src.String(), Dst: ev.Dst.String(), Ports: []uint16{}, Allowlisted: ev.Allowlisted, WouldBlock: ev.WouldBlock,
			ReportOnly: ev.ReportOnly, RateLimited: ev.RateLimited,
		}
		for _, p := range ev.Ports {
			if p.Proto == ports.UDP {
				js.UDPPorts = append(js.UDPPorts, p.Num)
			} else {
				js.Ports = append(js.Ports, p.Num)
			}
		}
		if ev.Prefix.IsValid() {
			js.Prefix = ev.Prefix.String()
		}
		v = js
	case *Limit:
		jl := jsonLimit{Time: ev.Time.Format(jsonTime), Event: "limit", Src: ev.Src.String(), Dst: ev.Dst.String(),
			Port: ev.Port.Num, Proto: ev.Port.Proto.String(), Limit: ev.Count, Window: limit.WindowString(ev.Window),
			Allowlisted: ev.Allowlisted, WouldBlock: ev.WouldBlock, RateLimited: ev.RateLimited, Throttled: ev.Throttled}
		if ev.Prefix.IsValid() {
			jl.Prefix = ev.Prefix.String()
		}
		v = jl
	case *Block:
		jb := jsonBlock{
			Time: ev.Time.Format(jsonTime), Event: "block", Prefix: PrefixString(ev.Prefix),
			Reason: ev.Reason, Duration: "permanent",
		}
		if ev.Duration != 0 {
			jb.Duration = ev.Duration.String()
		}
		if !ev.Expires.IsZero() {
			jb.Expires = ev.Expires.Format(jsonTime)
		}
		v = jb
	case *Unblock:
		v = jsonBlock{Time: ev.Time.Format(jsonTime), Event: "unblock", Prefix: PrefixString(ev.Prefix), By: ev.By}
	case *Allow:
		jb := jsonBlock{Time: ev.Time.Format(jsonTime), Event: "allow", Prefix: PrefixString(ev.Prefix),
			Reason: ev.Reason, Duration: "permanent", By: ev.By}
		if ev.Duration != 0 {
			jb.Duration = ev.Duration.String()
			jb.Expires = ev.Expires.Format(jsonTime)
		}
		v = jb
	case *Disallow:
		v = jsonBlock{Time: ev.Time.Format(jsonTime), Event: "disallow", Prefix: PrefixString(ev.Prefix), By: ev.By}
	case *Suppressed:
		v = struct {
			Time  string `json:"time"`
			Event string `json:"event"`
			Count int    `json:"count"`
		}{ev.Time.Format(jsonTime), "suppressed", ev.Count}
	default:
		return b, fmt.Errorf("unknown event %T", ev)
	}
	out, err := json.Marshal(v)
	return append(b, out...), err
}

// ParseJSON reads back an event AppendJSON wrote.
func ParseJSON(line []byte) (Event, error) {
	var v struct {
		Time        time.Time `json:"time"`
		Event       string    `json:"event"`
		Iface       string    `json:"iface"`
		Src         string    `json:"src"`
		SrcPort     uint16    `json:"src_port"`
		Dst         string    `json:"dst"`
		DstPort     uint16    `json:"dst_port"`
		Ports       []uint16  `json:"ports"`
		UDPPorts    []uint16  `json:"udp_ports"`
		Allowlisted bool      `json:"allowlisted"`
		WouldBlock  bool      `json:"would_block"`
		ReportOnly  bool      `json:"report_only"`
		RateLimited bool      `json:"rate_limited"`
		Prefix      string    `json:"prefix"`
		Reason      string    `json:"reason"`
		Duration    string    `json:"duration"`
		Expires     time.Time `json:"expires"`
		By          string    `json:"by"`
		Count       int       `json:"count"`
		Port        uint16    `json:"port"`
		Proto       string    `json:"proto"`
		Limit       int       `json:"limit"`
		Window      string    `json:"window"`
		Throttled   bool      `json:"throttled"`
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return nil, err
	}
	addr := func(s string) netip.Addr { a, _ := netip.ParseAddr(s); return a }
	prefix := func(s string) netip.Prefix {
		if p, err := netip.ParsePrefix(s); err == nil {
			return p
		}
		a := addr(s)
		return netip.PrefixFrom(a, a.BitLen())
	}
	duration := func(s string) time.Duration { d, _ := time.ParseDuration(s); return d }
	switch v.Event {
	case "connection":
		return &Connection{Time: v.Time, Iface: v.Iface, Src: netip.AddrPortFrom(addr(v.Src), v.SrcPort),
			Dst: netip.AddrPortFrom(addr(v.Dst), v.DstPort)}, nil
	case "portscan":
		sc := &Scan{Time: v.Time, Iface: v.Iface, Src: addr(v.Src), Dst: addr(v.Dst),
			Allowlisted: v.Allowlisted, WouldBlock: v.WouldBlock, ReportOnly: v.ReportOnly, RateLimited: v.RateLimited}
		for _, p := range v.Ports {
			sc.Ports = append(sc.Ports, ports.Port{Num: p})
		}
		for _, p := range v.UDPPorts {
			sc.Ports = append(sc.Ports, ports.Port{Num: p, Proto: ports.UDP})
		}
		if v.Prefix != "" {
			sc.Prefix = prefix(v.Prefix)
		}
		return sc, nil
	case "limit":
		l := &Limit{Time: v.Time, Src: addr(v.Src), Dst: addr(v.Dst), Port: ports.Port{Num: v.Port}, Count: v.Limit,
			Window: duration(v.Window), Allowlisted: v.Allowlisted, WouldBlock: v.WouldBlock, RateLimited: v.RateLimited,
			Throttled: v.Throttled}
		l.Port.Proto, _ = ports.ParseProto(v.Proto)
		if v.Prefix != "" {
			l.Prefix = prefix(v.Prefix)
		}
		return l, nil
	case "block":
		return &Block{Time: v.Time, Prefix: prefix(v.Prefix), Reason: v.Reason, Duration: duration(v.Duration), Expires: v.Expires}, nil
	case "unblock":
		return &Unblock{Time: v.Time, Prefix: prefix(v.Prefix), By: v.By}, nil
	case "allow":
		return &Allow{Time: v.Time, Prefix: prefix(v.Prefix), Reason: v.Reason, Duration: duration(v.Duration), Expires: v.Expires, By: v.By}, nil
	case "disallow":
		return &Disallow{Time: v.Time, Prefix: prefix(v.Prefix), By: v.By}, nil
	case "suppressed":
		return &Suppressed{Time: v.Time, Count: v.Count}, nil
	}
	return nil, fmt.Errorf("unknown event %q", v.Event)
}
