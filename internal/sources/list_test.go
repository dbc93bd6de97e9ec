package sources

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist.txt")
	content := "# scanners seen last week\n\n192.0.2.7\n  198.51.100.0/24   # a whole range\n2001:db8::/32\n::ffff:203.0.113.9\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("203.0.113.9/32"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestBadLineNamesFileLineAndValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist.txt")
	lines := make([]string, 11)
	for i := range lines {
		lines[i] = "192.0.2." + string(rune('1'+i%9))
	}
	lines = append(lines, "10.0.0.300")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFile(path)
	want := path + ` line 12: "10.0.0.300" is not an IP or CIDR`
	if err == nil || err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestListRefusesEverything(t *testing.T) {
	_, err := ParseList(strings.NewReader("192.0.2.1\n0.0.0.0/0\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2: 0.0.0.0/0 would block every IPv4 source") {
		t.Errorf("error %v", err)
	}
}
