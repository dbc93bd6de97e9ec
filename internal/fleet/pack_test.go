package fleet

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestPacksRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 7, 15, 28, 7, 123456789, time.UTC)
	blocks := []Block{
		block(netip.MustParsePrefix("198.51.100.7/32"), at, time.Hour),
		{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Origin: "manual", Reason: "by hand: \"x\"", Created: at},
		block(netip.MustParsePrefix("::ffff:203.0.113.9/128"), at, 24*time.Hour),
	}
	blocks[0].Ports = append(blocks[0].Ports, Port{Port: 65535, Proto: "udp", Seen: at.Add(time.Second)})
	pk, err := DecodePack(encodePack(blocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pk.Version != Version || len(pk.Blocks) != len(blocks) {
		t.Fatalf("%+v", pk)
	}
	for i, b := range blocks {
		b.Version = Version
		if got := pk.Blocks[i]; !sameBlock(got, b) {
			t.Errorf("block %d: %+v, want %+v", i, got, b)
		}
	}
	if !packable(blocks[0]) || packable(Block{Prefix: blocks[0].Prefix, Created: at, ExpiresAt: at.AddDate(300, 0, 0)}) {
		t.Error("a block ending after 2262 does not fit a pack's nanoseconds")
	}
}

func TestBadPacksAreRefusedWhole(t *testing.T) {
	at := time.Date(2026, 12, 7, 15, 28, 7, 0, time.UTC)
	good := encodePack([]Block{block(netip.MustParsePrefix("198.51.100.7/32"), at, time.Hour)})
	// msg builds a message of fields: a number and a varint, or bytes.
	msg := func(fs ...any) []byte {
		var b []byte
		for i := 0; i < len(fs); i += 2 {
			num := protowire.Number(fs[i].(int))
			switch v := fs[i+1].(type) {
			case int:
				b = appendVarint(b, num, uint64(v))
			case []byte:
				b = protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
			}
		}
		return b
	}
	v4 := []byte{198, 51, 100, 7}
	pack := func(blk []byte) []byte { return msg(1, 1, 2, blk) }

	// Fields of a later hbf are skipped.
	later := append(slices.Clone(good), msg(15, 7, 16, []byte("x"))...)
	if pk, err := DecodePack(later, nil); err != nil || len(pk.Blocks) != 1 {
		t.Errorf("a pack with fields of a later hbf: %+v, %v", pk, err)
	}
	if pk, err := DecodePack(pack(msg(1, v4, 2, 32, 9, 1)), nil); err != nil || pk.Blocks[0].Prefix != netip.MustParsePrefix("198.51.100.7/32") {
		t.Errorf("a block with a field of a later hbf: %+v, %v", pk, err)
	}
	for name, c := range map[string]struct {
		value  []byte
		reason string
	}{
		"json":                {[]byte(`{"version":1,"blocks":[]}`), RejectBadPack},
		"cut short":           {good[:len(good)-3], RejectBadPack},
		"version 2":           {msg(1, 2, 2, msg(1, v4, 2, 32)), RejectVersion},
		"no version":          {msg(2, msg(1, v4, 2, 32)), RejectVersion},
		"bits as bytes":       {pack(msg(1, v4, 2, []byte{32})), RejectBadPack},
		"no bits":             {pack(msg(1, v4)), RejectPrefix},
		"no address":          {pack(msg(2, 0)), RejectPrefix},
		"an address of 5":     {pack(msg(1, []byte{1, 2, 3, 4, 5}, 2, 32)), RejectBadPack},
		"host bits":           {pack(msg(1, v4, 2, 24)), RejectPrefix},
		"too many bits":       {pack(msg(1, v4, 2, 33)), RejectPrefix},
		"a port past 65535":   {pack(msg(1, v4, 2, 32, 7, msg(1, 65536))), RejectBadPack},
		"a bad block of many": {append(slices.Clone(good), msg(2, msg(1, v4, 2, 8))...), RejectPrefix},
	} {
		_, err := DecodePack(c.value, nil)
		var r *Rejection
		if !errors.As(err, &r) || r.Reason != c.reason {
			t.Errorf("%s: %v, want %s", name, err, c.reason)
		}
	}
}

func BenchmarkDecodePack(b *testing.B) {
	var blocks []Block
	at := time.Now()
	for i := range 10 {
		blocks = append(blocks, Block{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, 2, byte(i)}), 32),
			Origin: "scan", Reason: "port scan", Created: at, ExpiresAt: at.Add(time.Hour)})
	}
	value := encodePack(blocks)
	var room []Block
	b.ReportAllocs()
	for b.Loop() {
		pk, err := DecodePack(value, room)
		if err != nil {
			b.Fatal(err)
		}
		room = pk.Blocks
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(blocks)), "ns/block")
}
