package decision

import (
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/report"
	"github.com/hbf-firewall/hbf/internal/store"
)

// A fail2ban jail's unban ends that jail's block alone: what the scan
// detector, an operator or another jail blocked stays in the kernel.
func TestAnUnblockOfOneOriginLeavesTheOthers(t *testing.T) {
	h := newHarness(t)
	sshd, postfix := store.Origin("fail2ban:sshd"), store.Origin("fail2ban:postfix")
	ban := func(origin store.Origin, target string) {
		t.Helper()
		if r := one(h.s.BlockAs(root, origin, []string{target}, time.Hour, "", true)); !r.OK {
			t.Fatalf("%s bans %s: %s", origin, target, r.Error)
		}
	}
	ban(sshd, "198.51.100.7")
	ban(postfix, "198.51.100.7")
	h.scan("198.51.100.7/32")
	ban(sshd, "203.0.113.9")
	if recs := h.stored("198.51.100.7/32"); len(recs) != 3 {
		t.Fatalf("stored %+v: want sshd's, postfix's and the scan's", recs)
	}
	if recs := h.stored("203.0.113.9/32"); len(recs) != 1 || recs[0].Reason != "banned by fail2ban:sshd" || !recs[0].Fleet {
		t.Fatalf("stored %+v", recs)
	}

	if r := one(h.s.UnblockAs(root, sshd, []string{"198.51.100.7"}, false)); !r.OK {
		t.Fatalf("sshd's unban: %s", r.Error)
	}
	if _, ok := h.kernel("198.51.100.7/32"); !ok || len(h.stored("198.51.100.7/32")) != 2 {
		t.Errorf("sshd's unban took others' blocks: stored %+v", h.stored("198.51.100.7/32"))
	}
	if ev := published[*report.Unblock](h); len(ev) != 0 {
		t.Errorf("an unblock reported while the address stays blocked: %+v", ev)
	}
	wantError(t, one(h.s.UnblockAs(root, sshd, []string{"198.51.100.7"}, false)), "198.51.100.7/32 is not blocked by fail2ban:sshd")

	// Every block of one origin, and only of it.
	rs := h.s.UnblockAs(root, sshd, nil, true)
	if len(rs) != 1 || !rs[0].OK || rs[0].Prefix != pfx("203.0.113.9/32") {
		t.Fatalf("all of sshd's: %+v", rs)
	}
	if _, ok := h.kernel("203.0.113.9/32"); ok {
		t.Error("sshd's last block stays in the kernel")
	}
	if ev := published[*report.Unblock](h); len(ev) != 1 || ev[0].Prefix != pfx("203.0.113.9/32") {
		t.Errorf("events %+v: want the one address no longer blocked", ev)
	}
	if r := one(h.s.UnblockAs(root, postfix, []string{"198.51.100.7"}, false)); !r.OK {
		t.Fatal(r.Error)
	}
	if recs := h.stored("198.51.100.7/32"); len(recs) != 1 || recs[0].Origin != store.OriginScan {
		t.Errorf("the scan's block: %+v", recs)
	}
}

// A jail's blocks given with the fleet option are shared as manual ones.
func TestAJailsSharedBlocksGoToTheFleet(t *testing.T) {
	h := newHarness(t)
	one(h.s.BlockAs(root, "fail2ban:sshd", []string{"198.51.100.7"}, time.Hour, "", true))
	one(h.s.BlockAs(root, "fail2ban:sshd", []string{"198.51.100.8"}, time.Hour, "", false))
	shared := h.s.Shareable(Share{Manual: true})
	if len(shared) != 1 || shared[0].Prefix != pfx("198.51.100.7/32") || shared[0].Origin != "fail2ban:sshd" {
		t.Errorf("shared %+v: want the one block given with the fleet option", shared)
	}
}

func TestACallerNamesOnlyItsOwnOrigins(t *testing.T) {
	for s, want := range map[string]store.Origin{"": store.OriginManual, "manual": store.OriginManual,
		"fail2ban:sshd": "fail2ban:sshd", "fail2ban:nginx-http-auth": "fail2ban:nginx-http-auth"} {
		if got, err := store.ParseCallerOrigin(s); err != nil || got != want {
			t.Errorf("%q: %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"scan", "file", "kernel", "fleet:a", "fleet", "fail2ban:", "fail2ban:a b", "fail2ban:a/b", "crowdsec:cscli"} {
		if _, err := store.ParseCallerOrigin(s); err == nil {
			t.Errorf("%q taken as a caller's origin", s)
		}
	}
}
