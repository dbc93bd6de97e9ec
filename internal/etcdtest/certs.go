package etcdtest

import (
	"net/netip"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

// ServerTLS is the TLS of an etcd on addr with certificates of ca, which
// requires client certificates of ca.
func ServerTLS(ca *testenv.CA, addr netip.Addr) *TLSFiles {
	cert, key := ca.Issue("etcd", addr)
	return &TLSFiles{CA: ca.File, Cert: cert, Key: key}
}
