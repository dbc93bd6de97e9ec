// Package report writes hbf's events, one line each, as text for people or
// as JSON lines for programs.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
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

// Event is *Connection, *Scan or *Block.
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
	Ports       []uint16
	Allowlisted bool // reported, not blocked
}

// Block is a new block.
type Block struct {
	Time     time.Time
	Prefix   netip.Prefix
	Reason   string
	Duration time.Duration // 0: permanent
	Expires  time.Time     // zero: permanent
}

func (*Connection) isEvent() {}
func (*Scan) isEvent()       {}
func (*Block) isEvent()      {}

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
		w.buf, err = appendJSON(w.buf[:0], ev)
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
		b = fmt.Appendf(b, ": Port scan detected: %s -> %s on ports %s", ev.Src, ev.Dst, joinPorts(ev.Ports))
		if ev.Allowlisted {
			b = append(b, " (allowlisted, not blocked)"...)
		}
		return b
	case *Block:
		b = ev.Time.Local().AppendFormat(b, textTime)
		if ev.Duration == 0 {
			return fmt.Appendf(b, ": Blocked %s permanently: %s", PrefixString(ev.Prefix), ev.Reason)
		}
		return fmt.Appendf(b, ": Blocked %s for %s: %s", PrefixString(ev.Prefix), ev.Duration, ev.Reason)
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

func joinPorts(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
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
	Ports       []uint16 `json:"ports"`
	Allowlisted bool     `json:"allowlisted,omitempty"`
}

type jsonBlock struct {
	Time     string `json:"time"`
	Event    string `json:"event"`
	Prefix   string `json:"prefix"`
	Reason   string `json:"reason"`
	Duration string `json:"duration"`
	Expires  string `json:"expires,omitempty"`
}

func appendJSON(b []byte, ev Event) ([]byte, error) {
	var v any
	switch ev := ev.(type) {
	case *Connection:
		v = jsonConnection{
			Time: ev.Time.Format(jsonTime), Event: "connection", Iface: ev.Iface,
			Src: ev.Src.Addr().String(), SrcPort: ev.Src.Port(),
			Dst: ev.Dst.Addr().String(), DstPort: ev.Dst.Port(),
		}
	case *Scan:
		v = jsonScan{
			Time: ev.Time.Format(jsonTime), Event: "portscan", Iface: ev.Iface,
			Src: ev.Src.String(), Dst: ev.Dst.String(), Ports: ev.Ports, Allowlisted: ev.Allowlisted,
		}
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
	default:
		return b, fmt.Errorf("unknown event %T", ev)
	}
	out, err := json.Marshal(v)
	return append(b, out...), err
}
