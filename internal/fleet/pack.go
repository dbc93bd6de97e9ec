package fleet

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// A pack is blocks one node published together, under one key. Every
// member reads every block the fleet publishes, and decoding a block's
// JSON was a fifth of what a delivery cost it: a pack's value is the
// protobuf wire format instead, which it reads ten times faster. Its
// messages, by field number:
//
//	Pack:  1 version (varint), 2 block (Block, repeated)
//	Block: 1 addr (bytes: 4 or 16), 2 bits (varint), 3 origin (string),
//	       4 reason (string), 5 created (sint64: Unix nanoseconds),
//	       6 expires_at (sint64; absent: never), 7 port (Port, repeated)
//	Port:  1 port (varint), 2 proto (string), 3 seen (sint64)
//
// Fields this hbf does not know are skipped, as JSON's are.

// RejectBadPack: a pack's value does not decode.
const RejectBadPack = "bad_pack"

// Pack is blocks one node published together.
type Pack struct {
	Version int
	Blocks  []Block
}

const (
	packVersion protowire.Number = 1
	packBlock   protowire.Number = 2

	blockAddr    protowire.Number = 1
	blockBits    protowire.Number = 2
	blockOrigin  protowire.Number = 3
	blockReason  protowire.Number = 4
	blockCreated protowire.Number = 5
	blockExpires protowire.Number = 6
	blockPort    protowire.Number = 7

	portNumber protowire.Number = 1
	portProto  protowire.Number = 2
	portSeen   protowire.Number = 3
)

// packable says whether b's times fit a pack's nanoseconds (the years
// 1678 to 2262); a block that does not goes under a key of its own.
func packable(b Block) bool {
	fits := func(t time.Time) bool { return t.IsZero() || time.Unix(0, t.UnixNano()).Equal(t) }
	for _, p := range b.Ports {
		if !fits(p.Seen) {
			return false
		}
	}
	return fits(b.Created) && fits(b.ExpiresAt)
}

// encodePack writes blocks as a pack's value.
func encodePack(blocks []Block) []byte {
	out := protowire.AppendVarint(protowire.AppendTag(nil, packVersion, protowire.VarintType), Version)
	var blk, port []byte
	for _, b := range blocks {
		blk = protowire.AppendBytes(protowire.AppendTag(blk[:0], blockAddr, protowire.BytesType), b.Prefix.Addr().AsSlice())
		blk = appendVarint(blk, blockBits, uint64(b.Prefix.Bits()))
		blk = appendString(blk, blockOrigin, b.Origin)
		blk = appendString(blk, blockReason, b.Reason)
		blk = appendTime(blk, blockCreated, b.Created)
		blk = appendTime(blk, blockExpires, b.ExpiresAt)
		for _, p := range b.Ports {
			port = appendVarint(port[:0], portNumber, uint64(p.Port))
			port = appendString(port, portProto, p.Proto)
			port = appendTime(port, portSeen, p.Seen)
			blk = protowire.AppendBytes(protowire.AppendTag(blk, blockPort, protowire.BytesType), port)
		}
		out = protowire.AppendBytes(protowire.AppendTag(out, packBlock, protowire.BytesType), blk)
	}
	return out
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

func appendTime(b []byte, num protowire.Number, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	return appendVarint(b, num, protowire.EncodeZigZag(t.UnixNano()))
}

// DecodePack reads a pack's value into the room of into: every block in
// it is good, or the pack is refused whole, as a key of one block would
// be.
func DecodePack(data []byte, into []Block) (Pack, error) {
	pk := Pack{}
	n := 0
	err := packSchema.fields(data, func(f field) error {
		switch f.num {
		case packVersion:
			pk.Version = int(f.varint)
		case packBlock:
			n++
		}
		return nil
	})
	if err != nil {
		return Pack{}, reject(RejectBadPack, "%v", err)
	}
	if pk.Version != Version {
		return Pack{}, reject(RejectVersion, "a pack of version %d: this hbf reads %d", pk.Version, Version)
	}
	pk.Blocks = slices.Grow(into[:0], n)
	err = packSchema.fields(data, func(f field) error {
		if f.num != packBlock {
			return nil
		}
		b, err := decodePackedBlock(f.bytes)
		pk.Blocks = append(pk.Blocks, b)
		return err
	})
	var rej *Rejection
	switch {
	case errors.As(err, &rej):
		return Pack{}, err
	case err != nil:
		return Pack{}, reject(RejectBadPack, "block %d: %v", len(pk.Blocks), err)
	}
	return pk, nil
}

func decodePackedBlock(data []byte) (Block, error) {
	b := Block{Version: Version}
	var addr netip.Addr
	bits := -1
	err := blockSchema.fields(data, func(f field) error {
		switch f.num {
		case blockAddr:
			var ok bool
			if addr, ok = netip.AddrFromSlice(f.bytes); !ok {
				return fmt.Errorf("an address of %d bytes", len(f.bytes))
			}
		case blockBits:
			bits = int(min(f.varint, 255))
		case blockOrigin:
			b.Origin = intern(f.bytes)
		case blockReason:
			b.Reason = intern(f.bytes)
		case blockCreated:
			b.Created = f.time()
		case blockExpires:
			b.ExpiresAt = f.time()
		case blockPort:
			p, err := decodePort(f.bytes)
			b.Ports = append(b.Ports, p)
			return err
		}
		return nil
	})
	if err != nil {
		return b, err
	}
	if b.Prefix = netip.PrefixFrom(addr, bits); !b.Prefix.IsValid() || b.Prefix.Masked() != b.Prefix {
		return b, reject(RejectPrefix, "prefix %v/%d", addr, bits)
	}
	return b, nil
}

func decodePort(data []byte) (Port, error) {
	var p Port
	err := portSchema.fields(data, func(f field) error {
		switch f.num {
		case portNumber:
			if f.varint > 65535 {
				return fmt.Errorf("port %d", f.varint)
			}
			p.Port = uint16(f.varint)
		case portProto:
			p.Proto = intern(f.bytes)
		case portSeen:
			p.Seen = f.time()
		}
		return nil
	})
	return p, err
}

// field is one field of a message: its number, and its value as a number
// or as bytes.
type field struct {
	num    protowire.Number
	varint uint64
	bytes  []byte
}

func (f field) time() time.Time { return time.Unix(0, protowire.DecodeZigZag(f.varint)) }

// schema is the wire type of each field of a message, by number; a
// number it does not name is a field of a later hbf's.
type schema []protowire.Type

const unknownField protowire.Type = -1

var (
	packSchema  = schema{unknownField, protowire.VarintType, protowire.BytesType}
	blockSchema = schema{unknownField, protowire.BytesType, protowire.VarintType, protowire.BytesType,
		protowire.BytesType, protowire.VarintType, protowire.VarintType, protowire.BytesType}
	portSchema = schema{unknownField, protowire.VarintType, protowire.BytesType, protowire.VarintType}
)

// fields calls each with the fields of a message in turn. A field of the
// wrong type is an error: a prefix's bits sent as bytes must not read as
// zero, a block of everything. One of a number s does not know is
// skipped, whatever its type.
func (s schema) fields(data []byte, each func(field) error) error {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
		want := unknownField
		if int(num) < len(s) {
			want = s[num]
		}
		f := field{num: num}
		switch {
		case want == unknownField:
			n = protowire.ConsumeFieldValue(num, typ, data)
		case typ != want:
			return fmt.Errorf("field %d is of wire type %d, not %d", num, typ, want)
		case typ == protowire.VarintType:
			f.varint, n = protowire.ConsumeVarint(data)
		default:
			f.bytes, n = protowire.ConsumeBytes(data)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
		if want == unknownField {
			continue
		}
		if err := each(f); err != nil {
			return err
		}
	}
	return nil
}

// intern returns the strings blocks repeat without allocating them.
func intern(b []byte) string {
	switch string(b) {
	case "scan":
		return "scan"
	case "manual":
		return "manual"
	case "limit":
		return "limit"
	case "port scan":
		return "port scan"
	case "tcp":
		return "tcp"
	case "udp":
		return "udp"
	}
	return string(b)
}
