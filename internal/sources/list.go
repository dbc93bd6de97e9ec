// Package sources reads the lists that blocks come from besides detection.
package sources

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/hbf-firewall/hbf/internal/policy"
)

// ParseList reads a list of IPs and CIDRs: one per line, blank lines and
// comments (from # to the end of the line) allowed. It stops at the first
// bad line, so a list is applied whole or not at all.
func ParseList(r io.Reader) ([]netip.Prefix, error) {
	var out []netip.Prefix
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		p, err := policy.ParsePrefix(line)
		if err == nil {
			err = policy.CheckBlock(p)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// LoadFile reads a list file; errors name the file.
func LoadFile(path string) ([]netip.Prefix, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	list, err := ParseList(f)
	if err != nil {
		return nil, fmt.Errorf("%s %w", path, err)
	}
	return list, nil
}
