package natports

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hbf-firewall/hbf/internal/ports"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// labNetns is a network namespace of the test's, and a Reader of it.
type labNetns struct {
	name string
	r    *Reader
}

func newLabNetns(t *testing.T) *labNetns {
	t.Helper()
	testenv.RequirePrivileged(t)
	testenv.RequireCommand(t, "ip")
	b := make([]byte, 4)
	rand.Read(b)
	name := "hbfnat" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &labNetns{name: name, r: &Reader{netns: fd, legacyTables: filepath.Join(t.TempDir(), "none")}}
}

// run runs a command in the namespace, stdin as its input.
func (n *labNetns) run(t *testing.T, stdin string, args ...string) {
	t.Helper()
	testenv.RequireCommand(t, args[0])
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (n *labNetns) read(t *testing.T) Snapshot {
	t.Helper()
	s, err := n.r.Read()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The ruleset of a host with a container published the nftables way, a
// redirect, and rules that forward nothing or match no port.
const nftRuleset = `
table ip nat {
	set published {
		type inet_service
		elements = { 5353, 6000 }
	}
	set published_ranges {
		type inet_service
		flags interval
		elements = { 7000-7002, 7100 }
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		udp dport 5300 dnat to 10.0.0.2:53
		tcp dport { 8080, 8443 } dnat to 10.0.0.2
		udp dport 161-162 dnat to 10.0.0.3
		th dport 9000 dnat to 10.0.0.4
		udp dport @published dnat to 10.0.0.5
		tcp dport @published_ranges dnat to 10.0.0.6
		tcp dport 2222 redirect to :22
		fib daddr type local jump services
		tcp dport 25 accept
		tcp dport != 3000 dnat to 10.0.0.9
	}
	chain services {
		tcp dport 30080 jump svc-web
	}
	chain svc-web {
		dnat to 10.0.0.7
	}
}
table ip6 nat {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		meta l4proto udp th dport 4500 dnat to [2001:db8::2]
	}
}
`

func TestNftablesPorts(t *testing.T) {
	n := newLabNetns(t)
	n.run(t, nftRuleset, "nft", "-f", "-")
	got := ports.Join(n.read(t).Ports)
	want := "2222,7000,7001,7002,7100,8080,8443,9000,30080," +
		"161/udp,162/udp,4500/udp,5300/udp,5353/udp,6000/udp,9000/udp"
	if got != want {
		t.Errorf("served ports\n got  %s\n want %s", got, want)
	}
}

// Docker publishes containers with iptables; on Debian 12 that is
// iptables-nft, whose rules keep xtables matches and targets.
func TestDockerStyleIptablesNftPorts(t *testing.T) {
	n := newLabNetns(t)
	n.run(t, `*nat
:PREROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A DOCKER ! -i docker0 -p udp -m udp --dport 5353 -j DNAT --to-destination 172.17.0.3:53
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 9000:9002 -j DNAT --to-destination 172.17.0.4
COMMIT
`, "iptables-nft-restore")
	n.run(t, `*nat
:PREROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-DN-1 - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A CNI-HOSTPORT-DNAT -p udp -m multiport --dports 4789 -j CNI-DN-1
-A CNI-HOSTPORT-DNAT -p tcp -m tcp --dport 8443 -j CNI-DN-1
-A CNI-DN-1 -j DNAT --to-destination 2001:db8::3
COMMIT
`, "ip6tables-nft-restore")
	got := ports.Join(n.read(t).Ports)
	// multiport is not read: its ports stay closed unless ignored.
	if want := "8080,8443,9000,9001,9002,5353/udp"; got != want {
		t.Errorf("served ports\n got  %s\n want %s", got, want)
	}
}

func TestGenerationMovesOnEveryCommit(t *testing.T) {
	n := newLabNetns(t)
	before, err := n.r.Generation()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := n.r.Generation(); err != nil || again != before {
		t.Fatalf("generation moved with nothing committed: %d, then %d (%v)", before, again, err)
	}
	n.run(t, "table inet hbftest { chain c { udp dport 53 accept; }; }", "nft", "-f", "-")
	after, err := n.r.Generation()
	if err != nil {
		t.Fatal(err)
	}
	if after == before {
		t.Fatalf("generation %d did not move with a new table", after)
	}
}

func TestLegacyNATIsNamed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ip_tables_names")
	r := &Reader{legacyTables: path}
	if r.legacyNAT() {
		t.Error("no iptables-legacy, yet a nat table")
	}
	if err := os.WriteFile(path, []byte("filter\nnat\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !r.legacyNAT() {
		t.Error("iptables-legacy's nat table not seen")
	}
}
