package e2e

import (
	"strings"
	"testing"

	"github.com/hbf-firewall/hbf/internal/crowdsectest"
	"github.com/hbf-firewall/hbf/internal/netlab"
)

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
