package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/crowdsectest"
	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// hydra against sshd, with a connection limit on its port and a machine
// of LAPI's, nothing else said: the block hbf makes reaches LAPI as an
// alert with its ban, as limits are pushed by default.
func TestCrowdSecGetsAHydraBlockByDefault(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "hydra")
	lab := newLab(t, netlab.Options{Peers: []string{"lapi", "attacker"}})
	lapi := crowdsectest.Start(t, crowdsectest.Options{NS: lab.Peers["lapi"], Addr: lab.Peers["lapi"].Addr4})
	attacker := lab.Peers["attacker"]
	dir := t.TempDir()
	logFile, passwords, password := filepath.Join(dir, "sshd.log"), filepath.Join(dir, "passwords"), filepath.Join(dir, "password")
	var list strings.Builder
	for i := range 24 {
		fmt.Fprintf(&list, "guess%d\n", i)
	}
	for path, data := range map[string]string{logFile: "", passwords: list.String(), password: "machine-secret\n"} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	startSSHD(t, lab.Host, logFile)
	lapi.Machine("hbf-host", "machine-secret")
	d := startDaemon(t, lab, append(crowdsecArgs(t, lapi, "hbf-host"), "--limit", "22/tcp=3/60s",
		"--crowdsec-machine-id", "hbf-host", "--crowdsec-password-file", password)...)

	ctx, cancel := context.WithCancel(context.Background())
	hydra := make(chan string, 1)
	go func() { hydra <- runHydra(ctx, t, attacker, lab.Host.Addr4, passwords) }()
	defer func() { cancel(); <-hydra }()
	blocked := d.blockEvent(attacker.Addr4.String(), "connection limit 22/tcp")
	eventuallyWithin(t, 30*time.Second, "the alert and its ban in LAPI", func() bool {
		alerts, err := lapi.TryCscli("alerts", "list", "-o", "json")
		if err != nil || !strings.Contains(alerts, "hbf/connection-limit") || !strings.Contains(alerts, attacker.Addr4.String()) {
			return false
		}
		decisions, err := lapi.TryCscli("decisions", "list", "-o", "json")
		return err == nil && strings.Contains(decisions, attacker.Addr4.String())
	})
	t.Logf("hbf's block of hydra to its ban in LAPI: %v", time.Since(blocked).Round(time.Millisecond))
	if st := d.status().CrowdSec; st.AlertsPushed != 1 || st.AlertsDropped != 0 {
		t.Errorf("alerts pushed %d, dropped %d; want the one alert pushed", st.AlertsPushed, st.AlertsDropped)
	}
}

// LAPI over TLS: hbf checks LAPI's certificate against --crowdsec-ca, and
// knows itself to LAPI by its key or by a client certificate of an OU
// LAPI takes for bouncers. A certificate of another OU, or no CA, is
// refused, and hbf status says why.
func TestCrowdSecOverTLS(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{Peers: []string{"lapi", "attacker"}})
	ns := lab.Peers["lapi"]
	lapi := crowdsectest.Start(t, crowdsectest.Options{NS: ns, Addr: ns.Addr4, TLS: true})
	attacker := lab.Peers["attacker"]
	lapi.Cscli("decisions", "add", "-i", attacker.Addr4.String(), "-d", "1h", "-R", "e2e")
	withCert := func(cert, key string) []string {
		return []string{"--log-format", "json", "--crowdsec-lapi", lapi.URL(), "--crowdsec-interval", "1s",
			"--crowdsec-ca", lapi.TLS.CA, "--crowdsec-cert", cert, "--crowdsec-key", key}
	}
	for _, c := range []struct {
		name string
		args []string
		why  string // what hbf status says; none: connected
	}{
		{"a key, without the CA", crowdsecArgs(t, lapi, "no-ca"), "certificate signed by unknown authority"},
		{"a certificate of another OU", withCert(lapi.TLS.OtherCert, lapi.TLS.OtherKey), "bouncers_allowed_ou"},
		{"a key", append(crowdsecArgs(t, lapi, "key"), "--crowdsec-ca", lapi.TLS.CA), ""},
		{"a bouncer's certificate", withCert(lapi.TLS.BouncerCert, lapi.TLS.BouncerKey), ""},
	} {
		d := startDaemon(t, lab, c.args...)
		if c.why != "" {
			eventually(t, c.name+": the failure in hbf status", func() bool {
				st := d.status().CrowdSec
				return st != nil && !st.Connected && strings.Contains(st.Why, c.why)
			})
		} else {
			eventually(t, c.name+": the decision enforced", func() bool {
				return findBlock(d.listJSON(), host(attacker.Addr4), "crowdsec:cscli") != nil
			})
		}
		if err := d.stop(); err != nil {
			t.Fatalf("%s: stop: %v", c.name, err)
		}
	}
}
