package netlab

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/hbf-firewall/hbf/internal/testenv"
)

func TestLabConnectsPeersToHost(t *testing.T) {
	testenv.RequirePrivileged(t)
	testenv.RequireCommand(t, "ip")
	for name, opts := range map[string]Options{
		"switch": {Peers: []string{"client"}, Queues: 4},
		"direct": {Peers: []string{"client"}, Direct: true},
	} {
		t.Run(name, func(t *testing.T) { testLabConnects(t, opts) })
	}
}

func testLabConnects(t *testing.T, opts Options) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lab, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()

	ln, err := lab.Host.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(c.RemoteAddr().String()))
			c.Close()
		}
	}()
	client := lab.Peers["client"]
	for _, dst := range []netip.Addr{lab.Host.Addr4, lab.Host.Addr6} {
		c, err := client.DialContext(ctx, "tcp", netip.AddrPortFrom(dst, 7000).String())
		if err != nil {
			t.Fatalf("dial %v from client: %v", dst, err)
		}
		seen, _ := io.ReadAll(c)
		c.Close()
		host, _, _ := net.SplitHostPort(string(seen))
		if want := map[bool]netip.Addr{true: client.Addr4, false: client.Addr6}[dst.Is4()]; host != want.String() {
			t.Errorf("host saw %s, want %s", host, want)
		}
	}
	name := lab.Host.Name
	lab.Close()
	if err := exec.Command("ip", "netns", "pids", name).Run(); err == nil {
		t.Errorf("namespace %s still exists after Close", name)
	}
}

func TestDirectLabRefusesASecondPeer(t *testing.T) {
	testenv.RequirePrivileged(t)
	testenv.RequireCommand(t, "ip")
	_, err := New(context.Background(), Options{Peers: []string{"a", "b"}, Direct: true})
	if err == nil {
		t.Fatal("a direct lab with two peers was built")
	}
}
