package natports

import (
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"

	"github.com/hbf-firewall/hbf/internal/ports"
)

func TestSetRanges(t *testing.T) {
	port := func(p uint16, end bool) nftables.SetElement {
		return nftables.SetElement{Key: []byte{byte(p >> 8), byte(p)}, IntervalEnd: end}
	}
	interval := &nftables.Set{Interval: true, KeyType: nftables.TypeInetService}
	// As the kernel dumps them: last first, each end exclusive.
	got, ok := setRanges(interval, []nftables.SetElement{port(7101, true), port(7100, false), port(7003, true), port(7000, false)})
	if !ok || len(got) != 2 || got[0] != (portRange{7000, 7002}) || got[1] != (portRange{7100, 7100}) {
		t.Errorf("interval set: %v, %v", got, ok)
	}
	got, ok = setRanges(interval, []nftables.SetElement{port(65000, false)})
	if !ok || len(got) != 1 || got[0] != (portRange{65000, 0xffff}) {
		t.Errorf("open interval: %v, %v", got, ok)
	}
	if _, ok := setRanges(&nftables.Set{IsMap: true, KeyType: nftables.TypeInetService}, nil); ok {
		t.Error("a map read as a set of ports")
	}
	if _, ok := setRanges(&nftables.Set{KeyType: nftables.TypeIPAddr}, nil); ok {
		t.Error("a set of addresses read as ports")
	}
}

// A rule whose port match is negated forwards every other port: it is
// not read as serving the one it names, nor all the others.
func TestNegatedMatchesAreNotRead(t *testing.T) {
	dnat := &expr.Target{Name: "DNAT"}
	tb := table{chains: map[string][]*nftables.Rule{"c": {
		{Exprs: []expr.Any{&expr.Match{Name: "tcp", Info: &xt.Tcp{DstPorts: [2]uint16{22, 22}, InvFlags: xt.TcpInvDestPorts}}, dnat}},
		{Exprs: []expr.Any{&expr.Match{Name: "udp", Info: &xt.Udp{DstPorts: [2]uint16{0, 0xffff}}}, dnat}},
		{Exprs: []expr.Any{&expr.Match{Name: "udp", Info: &xt.Udp{DstPorts: [2]uint16{53, 53}}}, dnat}},
	}}}
	if got := ports.Join(tb.served()); got != "53/udp" {
		t.Errorf("served %s, want 53/udp alone", got)
	}
}
