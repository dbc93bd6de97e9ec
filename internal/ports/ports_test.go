package ports

import (
	"strings"
	"testing"
)

func TestParseList(t *testing.T) {
	l, err := ParseList("80, 443,53/udp,8000-8002/tcp,161-162/UDP")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.String(), "80,443,53/udp,8000-8002/tcp,161-162/udp"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for _, c := range []struct {
		p    Port
		want bool
	}{
		{Port{80, TCP}, true}, {Port{80, UDP}, true},
		{Port{53, UDP}, true}, {Port{53, TCP}, false},
		{Port{8001, TCP}, true}, {Port{8001, UDP}, false}, {Port{8003, TCP}, false},
		{Port{162, UDP}, true}, {Port{162, TCP}, false},
	} {
		if got := l.Contains(c.p); got != c.want {
			t.Errorf("Contains(%v/%v) = %v, want %v", c.p, c.p.Proto, got, c.want)
		}
		if got := l.Bits(c.p.Proto).Has(c.p.Num); got != c.want {
			t.Errorf("Bits(%v).Has(%d) = %v, want %v", c.p.Proto, c.p.Num, got, c.want)
		}
	}
}

func TestParseListErrors(t *testing.T) {
	for _, in := range []string{"0", "65536", "90-80", "80/sctp", "x", "80-", "/udp"} {
		_, err := ParseList(in)
		if err == nil {
			t.Errorf("ParseList(%q) took it", in)
			continue
		}
		if !strings.Contains(err.Error(), in) && !strings.Contains(err.Error(), strings.Split(in, "/")[len(strings.Split(in, "/"))-1]) {
			t.Errorf("ParseList(%q): %v does not name the value", in, err)
		}
	}
}

func TestPortString(t *testing.T) {
	for _, c := range []struct {
		p    Port
		want string
	}{{Port{80, TCP}, "80"}, {Port{53, UDP}, "53/udp"}} {
		if got := c.p.String(); got != c.want {
			t.Errorf("%#v.String() = %q, want %q", c.p, got, c.want)
		}
		back, err := Parse(c.want)
		if err != nil || back != c.p {
			t.Errorf("Parse(%q) = %v, %v", c.want, back, err)
		}
	}
	if p, err := Parse("443/tcp"); err != nil || p != (Port{443, TCP}) {
		t.Errorf("Parse(443/tcp) = %v, %v", p, err)
	}
}

func TestCompact(t *testing.T) {
	ps := []Port{{80, TCP}, {8080, TCP}, {8081, TCP}, {8082, TCP}, {53, UDP}, {54, UDP}, {161, UDP}}
	if got, want := Compact(ps), "80,8080-8082,53-54/udp,161/udp"; got != want {
		t.Errorf("Compact = %q, want %q", got, want)
	}
	if got := Compact(nil); got != "" {
		t.Errorf("Compact(nil) = %q", got)
	}
}
