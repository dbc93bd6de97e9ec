package fleet

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

var testLayout = Layout{Prefix: "/hbf"}

func TestKeysRoundTrip(t *testing.T) {
	for _, p := range []string{"198.51.100.7/32", "198.51.100.0/24", "2001:db8::/48", "2001:db8::7/128", "::ffff:198.51.100.7/128"} {
		pf := netip.MustParsePrefix(p)
		if got, want := escape(pf), url.PathEscape(p); got != want {
			t.Errorf("%s escaped as %s; url.PathEscape: %s", p, got, want)
		}
		for _, c := range []struct {
			key  string
			want Key
		}{
			{testLayout.Block("web-1.example", pf), Key{Kind: KindBlock, Node: "web-1.example", Prefix: pf}},
			{testLayout.AdminAllow(pf), Key{Kind: KindAllow, Prefix: pf}},
			{testLayout.AdminUnblock(pf), Key{Kind: KindUnblock, Prefix: pf}},
		} {
			if strings.Count(strings.TrimPrefix(c.key, "/hbf/"), "/") != 2 {
				t.Errorf("%s: the prefix's slash is not escaped", c.key)
			}
			got, err := testLayout.Parse(c.key)
			if err != nil || got != c.want {
				t.Errorf("%s: %+v, %v; want %+v", c.key, got, err, c.want)
			}
		}
	}
	if got, err := testLayout.Parse(testLayout.Member("a")); err != nil || got != (Key{Kind: KindMember, Node: "a"}) {
		t.Errorf("member key: %+v, %v", got, err)
	}
	if got, err := testLayout.Parse(testLayout.Pack("a", "18f3a2b4c5d6e7f8")); err != nil || got != (Key{Kind: KindPack, Node: "a", Pack: "18f3a2b4c5d6e7f8"}) {
		t.Errorf("pack key: %+v, %v", got, err)
	}
	if testLayout.Block("a", netip.MustParsePrefix("198.51.100.0/24")) != "/hbf/blocks/a/198.51.100.0%2F24" {
		t.Errorf("block key %s", testLayout.Block("a", netip.MustParsePrefix("198.51.100.0/24")))
	}
}

func TestKeysOutsideTheLayoutAreRefused(t *testing.T) {
	for _, key := range []string{
		"/hbf/other/x",
		"/hbf/blocks/a",                     // no prefix
		"/hbf/blocks/a/198.51.100.0/24",     // slash not escaped
		"/hbf/blocks/a/198.51.100.7%2F24",   // host bits
		"/hbf/blocks/a/10.0.0.300%2F32",     // not an address
		"/hbf/blocks/a b/198.51.100.7%2F32", // a node name with a space
		"/hbf/blocks/a/198.51.100.007%2F32",
		"/hbf/blocks/a/198.51.100.7%2f32", // not as hbf escapes it
		"/hbf/blocks/a/198.51.100.7%2F32%2F32",
		"/hbf/blocks/a/198.51.100.7%2F032",
		"/hbf/blocks/a/198.51.100.7%2F+32",
		"/hbf/blocks/a/198.51.100.7",
		"/hbf/blocks/a/pack-",
		"/hbf/blocks/a/pack-A1",
		"/hbf/blocks/a/pack-1%2F2",
		"/hbf/blocks/a/pack-012345678901234567890123456789012",
		"/hbf/blocks/a/fe80::1%eth0%2F128",
		"/hbf/blocks/a/2001:DB8::1%2F128", // not as netip writes it
		"/hbfx/blocks/a/198.51.100.7%2F32",
		"/hbf/members/",
		"/hbf/admin/allows/x",
	} {
		if k, err := testLayout.Parse(key); !errors.Is(err, ErrOutside) {
			t.Errorf("%s: %+v, %v; want ErrOutside", key, k, err)
		}
	}
}

func TestLayoutAndNodeNamesAreChecked(t *testing.T) {
	for _, bad := range []string{"", "hbf", "/"} {
		if _, err := NewLayout(bad); err == nil {
			t.Errorf("fleet prefix %q accepted", bad)
		}
	}
	if l, err := NewLayout("/corp/hbf/"); err != nil || l.Prefix != "/corp/hbf" {
		t.Errorf("/corp/hbf/: %+v %v", l, err)
	}
	for _, bad := range []string{"", "a/b", "a b", "ä", strings.Repeat("x", 254)} {
		if CheckNodeName(bad) == nil {
			t.Errorf("node name %q accepted", bad)
		}
	}
	if err := CheckNodeName("web-1.eu_west"); err != nil {
		t.Error(err)
	}
}

func TestValuesAreCheckedAgainstTheirKey(t *testing.T) {
	p := netip.MustParsePrefix("198.51.100.7/32")
	at := time.Date(2026, 11, 27, 15, 28, 7, 0, time.UTC)
	good := `{"version":1,"prefix":"198.51.100.7/32","origin":"scan","reason":"port scan",` +
		`"ports":[{"port":22,"proto":"tcp","seen":"2026-11-27T15:28:06Z"}],"created":"2026-11-27T15:28:07Z","expires_at":"2026-11-27T16:28:07Z"}`
	b, err := DecodeBlock([]byte(good), p)
	if err != nil || b.Origin != "scan" || len(b.Ports) != 1 || !b.ExpiresAt.Equal(at.Add(time.Hour)) {
		t.Fatalf("good block: %+v, %v", b, err)
	}
	if b.Expired(at) || !b.Expired(at.Add(time.Hour)) {
		t.Error("expiry")
	}
	for value, reason := range map[string]string{
		`not json`: RejectNotJSON,
		`{"version":2,"prefix":"198.51.100.7/32"}`:                 RejectVersion,
		`{"prefix":"198.51.100.7/32"}`:                             RejectVersion,
		`{"version":1,"prefix":"198.51.100.300/32"}`:               RejectPrefix,
		`{"version":1,"prefix":"198.51.100.7/24"}`:                 RejectPrefix,
		`{"version":1,"prefix":"198.51.100.8/32"}`:                 RejectMismatch,
		`{"version":1,"prefix":"198.51.100.7/32","created":"now"}`: RejectNotJSON,
	} {
		_, err := DecodeBlock([]byte(value), p)
		var r *Rejection
		if !errors.As(err, &r) || r.Reason != reason {
			t.Errorf("%s: %v, want %s", value, err, reason)
		}
	}
	u, err := DecodeUnblock([]byte(`{"version":1,"prefix":"198.51.100.7/32","by":"a (uid 0)","at":"2026-11-27T15:30:00Z"}`), p)
	if err != nil {
		t.Fatal(err)
	}
	if !u.Ends(b) || u.Ends(Block{Created: at.Add(time.Hour)}) {
		t.Error("an unblock ends the blocks made before it, and only those")
	}
	if _, err := DecodeMember([]byte(`{"version":1,"hbf":"v1","addrs":["192.0.2.1"],"clock":"2026-11-27T15:28:07Z"}`)); err != nil {
		t.Error(err)
	}
}
