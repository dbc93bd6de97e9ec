package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/api"
)

// The API takes a caller's origin for its blocks, and refuses what is
// not one, or an unblock that would be scoped and fleet-wide at once.
func TestTheAPIScopesBlocksToACallersOrigin(t *testing.T) {
	h := newHarness(t)
	svc := &service{d: h.d}
	ctx := context.Background()
	req := api.ChangeRequest{Targets: []string{"198.51.100.7"}, For: time.Hour, Origin: "fail2ban:sshd"}
	if rs := svc.Block(ctx, root, req); len(rs) != 1 || !rs[0].OK {
		t.Fatalf("a jail's ban: %+v", rs)
	}
	if rs := svc.Block(ctx, root, api.ChangeRequest{Targets: []string{"198.51.100.7"}}); !rs[0].OK {
		t.Fatalf("an operator's block: %+v", rs)
	}
	if rs := svc.Unblock(ctx, root, req); len(rs) != 1 || !rs[0].OK {
		t.Fatalf("the jail's unban: %+v", rs)
	}
	if _, ok := h.kernel("198.51.100.7/32"); !ok {
		t.Error("the jail's unban took the operator's block")
	}
	for _, c := range []struct {
		req  api.ChangeRequest
		want string
	}{
		{api.ChangeRequest{Targets: []string{"198.51.100.8"}, Origin: "scan"}, "manual or fail2ban:<jail>"},
		{api.ChangeRequest{All: true, Origin: "fail2ban:a b"}, "a jail is named by"},
		{api.ChangeRequest{Targets: []string{"198.51.100.7"}, Origin: "fail2ban:sshd", Fleet: true}, "give --origin or --fleet"},
	} {
		call := svc.Block
		if c.req.All || c.req.Fleet {
			call = svc.Unblock
		}
		rs := call(ctx, root, c.req)
		if len(rs) != 1 || rs[0].OK || !strings.Contains(rs[0].Error, c.want) {
			t.Errorf("%+v: %+v, want a refusal saying %q", c.req, rs, c.want)
		}
	}
}
