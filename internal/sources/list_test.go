package sources

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hbf-firewall/hbf/internal/policy"
)

func collect(l *List) []netip.Prefix { return slices.Collect(l.All()) }

func TestReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist.txt")
	content := "# scanners seen last week\n\n192.0.2.7\n  198.51.100.0/24   # a whole range\n2001:db8::/32 ; SBL12345\n::ffff:203.0.113.9\n192.0.2.7\n2001:db8::9\n; DROP header\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.9/32"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("2001:db8::9/128"),
	}
	if got := collect(f.List); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (sorted, IPv4 first, duplicates once)", got, want)
	}
	if f.SHA256 != sha256.Sum256([]byte(content)) {
		t.Error("hash of the content")
	}
	if !f.List.Has(netip.MustParsePrefix("198.51.100.0/24")) || f.List.Has(netip.MustParsePrefix("198.51.100.0/25")) {
		t.Error("Has")
	}
	if got := f.List.Holding(netip.MustParsePrefix("198.51.100.9/32").Addr()); len(got) != 1 {
		t.Errorf("Holding: %v", got)
	}
	if v4, v6 := f.List.Exact(); v4 != 2 || v6 != 1 {
		t.Errorf("Exact() = %d, %d; want 2 IPv4 and 1 IPv6 address (the prefixes go elsewhere)", v4, v6)
	}
}

func TestBadLineNamesFileLineAndValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist.txt")
	lines := make([]string, 11)
	for i := range lines {
		lines[i] = fmt.Sprintf("192.0.2.%d", i+1)
	}
	lines = append(lines, "10.0.0.300")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(path, nil)
	want := path + ` line 12: "10.0.0.300" is not an IP or CIDR`
	if err == nil || err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestRefusedEntriesAreSkippedAlone(t *testing.T) {
	check := func(p netip.Prefix) error {
		if p.Contains(netip.MustParseAddr("192.0.2.1")) {
			return errors.New("an address of this host")
		}
		return nil
	}
	l, skipped, err := ParseList(strings.NewReader("192.0.2.1\n192.0.2.0/24\n198.51.100.7\n"), check)
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != 1 || len(skipped) != 2 || skipped[0].Line != 1 || skipped[1].Line != 2 {
		t.Errorf("list %v, skipped %+v", collect(l), skipped)
	}
	if txt := SkippedText("f", skipped); !strings.Contains(txt, "f line 1: an address of this host") {
		t.Errorf("skipped text %q", txt)
	}
}

func TestTooWideEntriesAreSkipped(t *testing.T) {
	check := func(p netip.Prefix) error { return policy.DefaultRules.CheckBlock(p) }
	l, skipped, err := ParseList(strings.NewReader("192.0.2.1\n0.0.0.0/0\n10.0.0.0/7\n"), check)
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != 1 || len(skipped) != 2 || !strings.Contains(skipped[0].Err.Error(), "0.0.0.0/0 would block every IPv4 source") {
		t.Errorf("list %v, skipped %+v", collect(l), skipped)
	}
}

func TestParseIPv4MatchesNetip(t *testing.T) {
	for _, s := range []string{"192.0.2.7", "0.0.0.0", "255.255.255.255", "1.2.3", "1.2.3.4.5", "256.1.1.1",
		"01.2.3.4", "1.2.3.04", "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4/32", "1.2.3.-4", "", "1.2.3.999", "10.0.0.0"} {
		got, ok := parseIPv4([]byte(s))
		want, err := netip.ParseAddr(s)
		switch {
		case ok && (err != nil || got.Addr() != want || got.Bits() != 32):
			t.Errorf("%q: fast parser says %v, netip %v %v", s, got, want, err)
		case !ok && err == nil && want.Is4() && !strings.Contains(s, "/"):
			t.Errorf("%q: fast parser refused what netip reads as %v", s, want)
		}
	}
}

func FuzzParseIPv4(f *testing.F) {
	for _, s := range []string{"192.0.2.7", "01.2.3.4", "1.2.3", "255.255.255.255", "1.2.3.4/24"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseIPv4([]byte(s))
		want, err := netip.ParseAddr(s)
		if ok && (err != nil || got.Addr() != want) {
			t.Errorf("%q: fast parser says %v, netip %v %v", s, got, want, err)
		}
		if !ok && err == nil && want.Is4() {
			t.Errorf("%q: fast parser refused what netip reads as %v", s, want)
		}
	})
}
