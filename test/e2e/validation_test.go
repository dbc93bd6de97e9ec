package e2e

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
	"github.com/hbf-firewall/hbf/internal/netlab"
)

type validationRow struct {
	target string
	prefix string // blocked as; "" when refused
	says   string // part of the refusal
}

// validationTable reads the table of docs/security.md.
func validationTable(t *testing.T) []validationRow {
	t.Helper()
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "<!-- validation-table -->")
	table, _, ok2 := strings.Cut(table, "<!-- /validation-table -->")
	if !ok || !ok2 {
		t.Fatal("docs/security.md has no validation table")
	}
	var rows []validationRow
	for _, l := range strings.Split(table, "\n") {
		cells := strings.Split(l, "|")
		if len(cells) != 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		r := validationRow{target: strings.Trim(strings.TrimSpace(cells[1]), "`")}
		answer := strings.TrimSpace(cells[2])
		switch {
		case strings.HasPrefix(answer, "blocked as "):
			r.prefix, _, _ = strings.Cut(strings.TrimPrefix(answer, "blocked as "), " ")
		case strings.HasPrefix(answer, "refused: "):
			r.says = strings.TrimPrefix(answer, "refused: ")
		default:
			t.Fatalf("validation table: cannot read the answer %q", answer)
		}
		rows = append(rows, r)
	}
	if len(rows) < 20 {
		t.Fatalf("validation table: %d rows read", len(rows))
	}
	return rows
}

// Every row of the documented validation table, through the CLI and through
// the API: blocks listed as documented, refusals saying what is documented,
// and nothing stored for a refused target.
func TestAddressValidationTable(t *testing.T) {
	t.Parallel()
	rows := validationTable(t)
	lab := newLab(t, netlab.Options{})
	d := startDaemon(t, lab, "--allow", "198.51.100.64/26")
	client := api.NewClient(d.socket())

	for _, r := range rows {
		out, code := d.cli("block", r.target)
		if r.prefix != "" {
			if code != 0 {
				t.Errorf("hbf block %s: exit %d, %s; want it blocked as %s", r.target, code, out, r.prefix)
			}
		} else if code != 1 || !strings.Contains(out, r.says) {
			t.Errorf("hbf block %s: exit %d, %q; want exit 1 saying %q", r.target, code, strings.TrimSpace(out), r.says)
		}
		d.cli("unblock", r.target)

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := client.Change(ctx, "block", api.ChangeRequest{Targets: []string{r.target}})
		cancel()
		if err != nil || len(res) != 1 {
			t.Fatalf("API block %s: %v, %v", r.target, res, err)
		}
		switch {
		case r.prefix != "" && (!res[0].OK || res[0].Prefix.String() != r.prefix):
			t.Errorf("API block %s: %+v, want blocked as %s", r.target, res[0], r.prefix)
		case r.prefix == "" && (res[0].OK || !strings.Contains(res[0].Error, r.says)):
			t.Errorf("API block %s: %+v, want refused saying %q", r.target, res[0], r.says)
		}
	}
	var listed []string
	for _, b := range d.listJSON() {
		listed = append(listed, b.Prefix.String())
	}
	var want []string
	for _, r := range rows {
		if r.prefix != "" {
			want = append(want, r.prefix)
		}
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("hbf list: %v, want exactly the accepted targets %v", listed, want)
	}
}
