package crowdsectest

import (
	"crypto/tls"
	"crypto/x509"
	"net/netip"
	"os"
	"testing"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

// BouncerOU is the OU of the client certificates a TLS LAPI takes for
// bouncers; any other is refused.
const BouncerOU = "bouncer-ou"

// TLSFiles are a TLS LAPI's PEM files: the CA that signed them all, its
// server certificate, and client certificates.
type TLSFiles struct {
	CA                      string
	ServerCert, ServerKey   string
	BouncerCert, BouncerKey string // of BouncerOU
	OtherCert, OtherKey     string // of an OU LAPI does not take for bouncers
}

// issueTLS makes a CA and the certificates of a LAPI on addr.
func issueTLS(t testing.TB, addr netip.Addr) TLSFiles {
	ca := testenv.NewCA(t, "lapi-ca")
	f := TLSFiles{CA: ca.File}
	f.ServerCert, f.ServerKey = ca.Issue("lapi", addr)
	f.BouncerCert, f.BouncerKey = ca.IssueIn(BouncerOU, "hbf")
	f.OtherCert, f.OtherKey = ca.IssueIn("not-a-bouncer", "other")
	return f
}

// clientTLS trusts the CA of f.
func (f TLSFiles) clientTLS(t testing.TB) *tls.Config {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(f.CA)
	if err != nil || !pool.AppendCertsFromPEM(b) {
		t.Fatalf("read the test CA %s: %v", f.CA, err)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}
