package fleet

import (
	"encoding/json"
	"fmt"

	"net/netip"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
)

// Version is the version of the values this hbf writes and reads.
const Version = 1

// Why a value read from etcd is refused; the reasons of
// hbf_fleet_rejected_total.
const (
	RejectNotJSON  = "not_json"     // the value does not decode
	RejectVersion  = "version"      // written by an hbf of an unknown version
	RejectPrefix   = "bad_prefix"   // the value's prefix does not parse, or has host bits
	RejectMismatch = "key_mismatch" // the key and the value name different prefixes
	RejectOutside  = "outside"      // a key no layout rule makes
	RejectExpired  = "expired"      // over already
)

// Rejection is a value refused, with the reason of the metric.
type Rejection struct {
	Reason string
	Err    error
}

func (r *Rejection) Error() string { return r.Reason + ": " + r.Err.Error() }
func (r *Rejection) Unwrap() error { return r.Err }

func reject(reason, format string, args ...any) error {
	return &Rejection{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Port is one port of a scan's evidence.
type Port struct {
	Port  uint16    `json:"port"`
	Proto string    `json:"proto"` // tcp or udp
	Seen  time.Time `json:"seen"`
}

// Block is a block one node publishes.
type Block struct {
	Version int          `json:"version"`
	Prefix  netip.Prefix `json:"prefix"`
	Origin  string       `json:"origin"` // scan, limit, manual or fail2ban:<jail>
	Reason  string       `json:"reason,omitempty"`
	Ports   []Port       `json:"ports,omitempty"`
	Created time.Time    `json:"created"`
	// ExpiresAt is when the block ends; zero: never. A lease only cleans
	// the key up after it.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// pack is the id of the pack the view read it from; "": a key of its
	// own.
	pack string
}

// Detected reports whether the block is a node's detection (a scan, a
// connection limit) rather than a decision: those wait for
// --fleet-min-reporters nodes to report the source.
func (b Block) Detected() bool { return b.Origin == "scan" || b.Origin == "limit" }

// Expired reports whether the block no longer applies at now.
func (b Block) Expired(now time.Time) bool { return !b.ExpiresAt.IsZero() && !now.Before(b.ExpiresAt) }

// Allow is a fleet-wide allowlist entry.
type Allow struct {
	Version   int          `json:"version"`
	Prefix    netip.Prefix `json:"prefix"`
	Reason    string       `json:"reason,omitempty"`
	By        string       `json:"by"` // node and caller: "a (uid 0)"
	Created   time.Time    `json:"created"`
	ExpiresAt time.Time    `json:"expires_at,omitzero"`
}

// Expired reports whether the allow no longer applies at now.
func (a Allow) Expired(now time.Time) bool { return !a.ExpiresAt.IsZero() && !now.Before(a.ExpiresAt) }

// Unblock ends every node's block of a prefix made before At: a block
// published later by a node cut off at the time, but made before, is not
// resurrected.
type Unblock struct {
	Version int          `json:"version"`
	Prefix  netip.Prefix `json:"prefix"`
	By      string       `json:"by"`
	At      time.Time    `json:"at"`
}

// Ends reports whether the unblock ends b.
func (u Unblock) Ends(b Block) bool { return !b.Created.After(u.At) }

// Member is what a node says of itself in its membership key.
type Member struct {
	Version    int          `json:"version"`
	HBF        string       `json:"hbf"` // the node's hbf version
	Interfaces []string     `json:"interfaces"`
	Addrs      []netip.Addr `json:"addrs"` // never blocked by the others
	Clock      time.Time    `json:"clock"` // when it wrote the key, for skew
	// Packs: the node reads packs. A node writes them only when every
	// member does: an hbf before them refuses their keys.
	Packs bool `json:"packs,omitempty"`
	// Seen is when this host read the key: Clock - Seen is the member's
	// skew, give or take etcd's delay.
	Seen time.Time `json:"-"`
}

// Skew is the member's clock against this host's.
func (m Member) Skew() time.Duration { return m.Clock.Sub(m.Seen) }

// decode reads a value of a versioned kind and checks it names the
// prefix its key does.
func decode[T any](data []byte, version func(*T) int, prefix func(*T) netip.Prefix, key netip.Prefix) (T, error) {
	var v T
	// One decode for a good value, the commonest by far; the head says
	// what is wrong with a bad one (another version's may not fit these
	// types at all). Every member decodes every value the fleet writes:
	// json v2 does it in half the time of encoding/json, with a third of
	// the allocations, and reads what encoding/json writes.
	if err := jsonv2.Unmarshal(data, &v); err != nil {
		var head struct {
			Version int    `json:"version"`
			Prefix  string `json:"prefix"`
		}
		switch herr := json.Unmarshal(data, &head); {
		case herr != nil:
			return v, reject(RejectNotJSON, "%v", herr)
		case head.Version != Version:
			return v, reject(RejectVersion, "version %d: this hbf reads %d", head.Version, Version)
		case prefix != nil && !validPrefix(head.Prefix):
			return v, reject(RejectPrefix, "prefix %q", head.Prefix)
		}
		return v, reject(RejectNotJSON, "%v", err)
	}
	if n := version(&v); n != Version {
		return v, reject(RejectVersion, "version %d: this hbf reads %d", n, Version)
	}
	if prefix != nil {
		switch p := prefix(&v); {
		case !p.IsValid() || p.Masked() != p:
			return v, reject(RejectPrefix, "prefix %v", p)
		case p != key:
			return v, reject(RejectMismatch, "the key names %v, the value %v", key, p)
		}
	}
	return v, nil
}

func validPrefix(s string) bool {
	p, err := netip.ParsePrefix(s)
	return err == nil && p.Masked() == p
}

// DecodeBlock reads the value of a block key for prefix key.
func DecodeBlock(data []byte, key netip.Prefix) (Block, error) {
	return decode(data, func(b *Block) int { return b.Version }, func(b *Block) netip.Prefix { return b.Prefix }, key)
}

// DecodeAllow reads the value of an allow key for prefix key.
func DecodeAllow(data []byte, key netip.Prefix) (Allow, error) {
	return decode(data, func(a *Allow) int { return a.Version }, func(a *Allow) netip.Prefix { return a.Prefix }, key)
}

// DecodeUnblock reads the value of an unblock key for prefix key.
func DecodeUnblock(data []byte, key netip.Prefix) (Unblock, error) {
	return decode(data, func(u *Unblock) int { return u.Version }, func(u *Unblock) netip.Prefix { return u.Prefix }, key)
}

// DecodeMember reads the value of a membership key.
func DecodeMember(data []byte) (Member, error) {
	return decode(data, func(m *Member) int { return m.Version }, nil, netip.Prefix{})
}
