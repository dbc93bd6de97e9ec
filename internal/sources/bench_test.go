package sources

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkReadFile parses a million-address list, beside reading the same
// file line by line without parsing (the floor), measured in the same run.
func BenchmarkReadFile(b *testing.B) {
	path := filepath.Join(b.TempDir(), "million.txt")
	f, _ := os.Create(path)
	w := bufio.NewWriter(f)
	for i := range 1000000 {
		// Not in order: lists are not always sorted.
		j := (i * 7919) % 1000000
		fmt.Fprintf(w, "10.%d.%d.%d\n", j>>16&0xff, j>>8&0xff, j&0xff)
	}
	w.Flush()
	f.Close()
	b.Run("scan-only", func(b *testing.B) {
		for range b.N {
			f, _ := os.Open(path)
			sc := bufio.NewScanner(f)
			n := 0
			for sc.Scan() {
				n += len(sc.Bytes())
			}
			f.Close()
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			lf, err := ReadFile(path, nil)
			if err != nil || lf.List.Len() != 1000000 {
				b.Fatal(err)
			}
		}
	})
}
