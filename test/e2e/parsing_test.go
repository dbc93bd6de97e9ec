package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/hbf-firewall/hbf/internal/netlab"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

// Evasion through packet shapes, from a peer namespace, in native and in
// generic XDP: docs/security.md lists the rules these tests show.

var xdpModes = []string{"native", "generic"}

// Fragmented scans learn at most N ports: a first fragment too short for the
// TCP header (nmap -f, --mtu 8, -ff) is dropped, one that holds it is counted.
func TestFragmentedScans(t *testing.T) {
	t.Parallel()
	for _, mode := range xdpModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			lab := newLab(t, netlab.Options{Peers: []string{"f", "mtu8", "ff", "mtu24"}})
			serveHTTP(t, lab.Host, 8080, 8081, 8082, 8083, 8084, 8085)
			host4 := lab.Host.Addr4
			// Without hbf the kernel reassembles tiny fragments: the scan works.
			if got := learned(nmap(t, lab.Peers["f"], host4, "8080-8085", "-sS", "-T5", "-f")); len(got) != 6 {
				t.Fatalf("without hbf, nmap -f learned %v, want all 6 ports", got)
			}
			d := startDaemon(t, lab, "--xdp-mode", mode)

			// Tiny first fragments: nothing reaches the host, nothing is learnt.
			for _, tc := range []struct {
				peer   string
				target netip.Addr
				args   []string
			}{
				{"f", host4, []string{"-f"}},
				{"mtu8", host4, []string{"--mtu", "8"}},
				{"ff", host4, []string{"-ff"}},
			} {
				before := scrape(t, d).value(t, "hbf_packets_dropped_total", "tiny_fragment")
				states := nmap(t, lab.Peers[tc.peer], tc.target, "8080-8085", append([]string{"-sS", "-T5", "--max-retries", "1"}, tc.args...)...)
				if got := learned(states); len(got) != 0 {
					t.Errorf("nmap %v learned ports %v, want none", tc.args, got)
				}
				after := scrape(t, d).value(t, "hbf_packets_dropped_total", "tiny_fragment")
				if after-before < 6 {
					t.Errorf("nmap %v: %v tiny fragments dropped, want one per port at least", tc.args, after-before)
				}
			}

			// First fragments that hold the TCP header: counted like any SYN.
			scanner := lab.Peers["mtu24"]
			states := nmap(t, scanner, host4, "8080-8085", "-sS", "-T4", "--mtu", "24")
			if got := learned(states); len(got) > 3 {
				t.Errorf("nmap --mtu 24 learned %d ports %v, want at most 3", len(got), got)
			}
			d.waitLine(line(`Port scan detected: %s -> %s on ports [0-9,]+`, scanner.Addr4, host4))
		})
	}
}

// nmap cannot fragment IPv6: the same probes, hand-made. A SYN whose first
// fragment holds only part of its TCP header is dropped (with 8 bytes, so is
// its second fragment, at offset 8) before the kernel can reassemble it, so
// the port answers nothing; the same SYN with the whole TCP header in its
// first fragment is reassembled, answered and reported.
func TestFragmentedIPv6Probes(t *testing.T) {
	t.Parallel()
	for _, mode := range xdpModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			lab := newLab(t, netlab.Options{Peers: []string{"sender"}})
			serveHTTP(t, lab.Host, 8080)
			tx := newFrameSender(t, lab)
			src, dst := lab.Peers["sender"].Addr6, lab.Host.Addr6
			// Without hbf the kernel reassembles a SYN whose first fragment
			// holds the fixed TCP header but not all its options.
			if n := tx.answers(t, func() { tx.fragmentedSYN6(t, src, dst, 43050, 8080, 32) }); n != 1 {
				t.Fatalf("without hbf, a fragmented SYN got %d answers, want 1", n)
			}
			d := startDaemon(t, lab, "--xdp-mode", mode)

			before := scrape(t, d).value(t, "hbf_packets_dropped_total", "tiny_fragment")
			answers := tx.answers(t, func() {
				for i := range 3 {
					tx.fragmentedSYN6(t, src, dst, uint16(43000+i), 8080, 8)
				}
				tx.fragmentedSYN6(t, src, dst, 43051, 8080, 32)
			})
			if answers != 0 {
				t.Errorf("SYNs cut inside the TCP header got %d answers, want none", answers)
			}
			if got := scrape(t, d).value(t, "hbf_packets_dropped_total", "tiny_fragment") - before; got != 7 {
				t.Errorf("%v fragments dropped as tiny, want 7", got)
			}

			answers = tx.answers(t, func() { tx.fragmentedSYN6(t, src, dst, 43100, 8080, 40) })
			if answers != 1 {
				t.Errorf("a SYN with its whole TCP header in the first fragment got %d answers, want 1", answers)
			}
			d.waitLine(line(`New connection: \[%s\]:43100 -> \[%s\]:8080`, src, dst))
			if conns := d.matching(regexp.MustCompile(`New connection: .*:430\d\d `)); len(conns) != 0 {
				t.Errorf("tiny fragments reported as connections: %v", conns)
			}
		})
	}
}

// Tagged frames: a blocked source is dropped behind one and two VLAN tags, a
// deeper stack is dropped and counted, and TCP behind tags is read. In
// TCX mode the stack has taken the outer tag into the skb's vlan_tci
// before TC sees the frame: the verdicts are the same.
func TestTaggedFrames(t *testing.T) {
	t.Parallel()
	for _, mode := range append(xdpModes, "tcx") {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testenv.RequireCommand(t, "ethtool")
			lab := newLab(t, netlab.Options{Peers: []string{"sender"}, TaggedFrames: true})
			args := []string{"--xdp-mode", mode}
			if mode == "tcx" {
				args = []string{"--attach", "tcx"}
			}
			d := startDaemon(t, lab, args...)
			d.mustCLI("block", "203.0.113.66", "2001:db8:bad::/48")
			host4, host6 := lab.Host.Addr4, lab.Host.Addr6
			tx := newFrameSender(t, lab)

			const n = 20
			type send struct {
				name   string
				src    netip.Addr
				dst    netip.Addr
				tags   []layers.EthernetType
				reason string // the drop counter that must move by n; "" for none
			}
			for _, s := range []send{
				{"802.1Q, blocked IPv4", netip.MustParseAddr("203.0.113.66"), host4, []layers.EthernetType{layers.EthernetTypeDot1Q}, "blocked"},
				{"QinQ, blocked IPv6", netip.MustParseAddr("2001:db8:bad::66"), host6,
					[]layers.EthernetType{layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q}, "blocked"},
				{"802.1Q+802.1Q, blocked ::ffff:", netip.MustParseAddr("::ffff:203.0.113.66"), host6,
					[]layers.EthernetType{layers.EthernetTypeDot1Q, layers.EthernetTypeDot1Q}, "blocked"},
				{"three tags", netip.MustParseAddr("198.51.100.20"), host4,
					[]layers.EthernetType{layers.EthernetTypeQinQ, layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q}, "vlan_depth"},
			} {
				before := scrape(t, d)
				for i := range n {
					tx.send(t, s.tags, s.src, s.dst, uint16(41000+i), 8080)
				}
				eventually(t, s.name+": every frame counted", func() bool {
					return scrape(t, d).value(t, "hbf_packets_dropped_total", s.reason)-before.value(t, "hbf_packets_dropped_total", s.reason) >= n
				})
				after := scrape(t, d)
				if got := after.value(t, "hbf_packets_dropped_total", s.reason) - before.value(t, "hbf_packets_dropped_total", s.reason); got != n {
					t.Errorf("%s: %v drops for %s, want %d", s.name, got, s.reason, n)
				}
			}
			if conns := d.matching(regexp.MustCompile(`New connection: .*(203\.0\.113\.66|2001:db8:bad::66|198\.51\.100\.20)`)); len(conns) != 0 {
				t.Errorf("dropped frames reported as connections: %v", conns)
			}

			// A tagged SYN from a source that is not blocked is read through
			// the tags: reported, and counted toward a scan.
			src := netip.MustParseAddr("198.51.100.30")
			for port := uint16(9000); port < 9004; port++ {
				tx.send(t, []layers.EthernetType{layers.EthernetTypeDot1Q}, src, host4, 42000, port)
			}
			d.waitLine(line(`New connection: %s:42000 -> %s:9000`, src, host4))
			d.waitLine(line(`Port scan detected: %s -> %s on ports 9000,9001,9002,9003`, src, host4))
		})
	}
}

// hbf refuses an interface that carries no Ethernet header: its parser
// would read the IP header as MAC addresses and pass everything.
func TestNonEthernetInterfaceRefused(t *testing.T) {
	t.Parallel()
	lab := newLab(t, netlab.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := lab.Host.Run(ctx, "ip", "tuntap", "add", "dev", "tun0", "mode", "tun"); err != nil {
		t.Fatalf("create tun0: %v: %s", err, out)
	}
	d := tryDaemon(t, lab, "--iface", "tun0")
	if err := d.wait(20 * time.Second); err == nil {
		t.Fatal("hbf attached to a tun device")
	}
	if want := `interface "tun0" carries no Ethernet header`; !strings.Contains(d.stderrText(), want) {
		t.Errorf("stderr does not say %q:\n%s", want, d.stderrText())
	}
}

// frameSender writes whole Ethernet frames onto a peer's interface, as a
// host with VLAN interfaces would.
type frameSender struct {
	ns      *netlab.NS
	fd      int
	ifindex int
	srcMAC  net.HardwareAddr
	dstMAC  net.HardwareAddr
	linear  int    // with splitHeaders: bytes of a frame in the skb's linear part
	payload []byte // sent behind each TCP header
}

// splitHeaders makes the frames sent after it leave only their first n
// bytes in the socket buffer's linear part, the rest in page fragments:
// a virtio-net header whose hdr_len is n (PACKET_VNET_HDR). The kernel
// splits only frames of a page or more: each carries a payload that makes
// it one, and every link on the way gets a jumbo MTU. A veth passes that
// buffer on as it is, so the receiving side's TC program finds the headers
// past n outside the linear part.
func (s *frameSender) splitHeaders(t *testing.T, lab *netlab.Lab, n int) {
	t.Helper()
	for _, c := range [][]string{
		{"-n", s.ns.Name, "link", "set", netlab.Iface, "mtu", "9000"},
		{"-n", lab.Host.Name, "link", "set", netlab.Iface, "mtu", "9000"},
		{"-n", lab.Switch.Name, "link", "set", "p0", "mtu", "9000"},
		{"-n", lab.Switch.Name, "link", "set", "p1", "mtu", "9000"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", c, err, out)
		}
	}
	if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		t.Fatal(err)
	}
	s.linear, s.payload = n, make([]byte, 6000)
}

func newFrameSender(t *testing.T, lab *netlab.Lab) *frameSender {
	t.Helper()
	s := &frameSender{ns: lab.Peers["sender"], fd: -1}
	err := lab.Host.Do(func() error {
		ifc, err := net.InterfaceByName(netlab.Iface)
		if err == nil {
			s.dstMAC = ifc.HardwareAddr
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = lab.Peers["sender"].Do(func() error {
		ifc, err := net.InterfaceByName(netlab.Iface)
		if err != nil {
			return err
		}
		s.ifindex, s.srcMAC = ifc.Index, ifc.HardwareAddr
		// Protocol 0: a socket that sends and receives nothing.
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func (s *frameSender) write(t *testing.T, frame []byte) {
	t.Helper()
	to := &unix.SockaddrLinklayer{Ifindex: s.ifindex, Halen: 6}
	copy(to.Addr[:], s.dstMAC)
	if s.linear > 0 {
		// struct virtio_net_hdr: flags, gso_type (none), hdr_len, gso_size,
		// csum_start, csum_offset; little-endian.
		hdr := make([]byte, 10)
		binary.LittleEndian.PutUint16(hdr[2:], uint16(s.linear))
		frame = append(hdr, frame...)
	}
	if err := unix.Sendto(s.fd, frame, 0, to); err != nil {
		t.Fatal(fmt.Errorf("send frame: %w", err))
	}
}

// fragmentedSYN6 sends an IPv6 TCP SYN (40-byte header with the options
// Linux sends, 16 bytes of data) in two fragments, the first holding firstTCP
// bytes: a multiple of 8, or the kernel refuses the fragment.
func (s *frameSender) fragmentedSYN6(t *testing.T, src, dst netip.Addr, sport, dport uint16, firstTCP int) {
	t.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: uint32(sport) << 8, SYN: true, Window: 64240,
		Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	data := gopacket.Payload(bytes.Repeat([]byte{'x'}, 16))
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, tcp, data); err != nil {
		t.Fatal(err)
	}
	segment := buf.Bytes()
	id := uint32(sport)
	for _, part := range []struct {
		off  int
		data []byte
		more bool
	}{{0, segment[:firstTCP], true}, {firstTCP, segment[firstTCP:], false}} {
		frame := make([]byte, 0, 14+40+8+len(part.data))
		frame = append(frame, s.dstMAC...)
		frame = append(frame, s.srcMAC...)
		frame = binary.BigEndian.AppendUint16(frame, uint16(layers.EthernetTypeIPv6))
		frame = append(frame, 0x60, 0, 0, 0)
		frame = binary.BigEndian.AppendUint16(frame, uint16(8+len(part.data)))
		frame = append(frame, byte(layers.IPProtocolIPv6Fragment), 64)
		frame = append(append(frame, src.AsSlice()...), dst.AsSlice()...)
		fo := uint16(part.off/8) << 3
		if part.more {
			fo |= 1
		}
		frame = append(frame, byte(layers.IPProtocolTCP), 0)
		frame = binary.BigEndian.AppendUint16(frame, fo)
		frame = binary.BigEndian.AppendUint32(frame, id)
		s.write(t, append(frame, part.data...))
	}
}

// answers runs send and counts the SYN-ACKs and RSTs the host sends back
// within a second after it.
func (s *frameSender) answers(t *testing.T, send func()) int {
	t.Helper()
	var rx int
	err := s.ns.Do(func() error {
		var err error
		rx, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(rx, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: s.ifindex})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rx)
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	send()
	n := 0
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		size, _, err := unix.Recvfrom(rx, buf, 0)
		if err != nil {
			continue // the receive timeout
		}
		p := gopacket.NewPacket(buf[:size], layers.LayerTypeEthernet, gopacket.Default)
		eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if eth != nil && tcp != nil && bytes.Equal(eth.SrcMAC, s.dstMAC) && (tcp.SYN && tcp.ACK || tcp.RST) {
			n++
		}
	}
	return n
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// send writes one TCP SYN behind the given tag stack (outermost first).
func (s *frameSender) send(t *testing.T, tags []layers.EthernetType, src, dst netip.Addr, sport, dport uint16) {
	t.Helper()
	ipType := layers.EthernetTypeIPv4
	if !src.Is4() {
		ipType = layers.EthernetTypeIPv6
	}
	next := func(i int) layers.EthernetType {
		if i < len(tags) {
			return tags[i]
		}
		return ipType
	}
	ls := []gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: s.srcMAC, DstMAC: s.dstMAC, EthernetType: next(0)}}
	for i := range tags {
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(100 + i), Type: next(i + 1)})
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: uint32(sport) << 8, SYN: true, Window: 64240}
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		tcp.SetNetworkLayerForChecksum(ip)
		ls = append(ls, ip)
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		tcp.SetNetworkLayerForChecksum(ip)
		ls = append(ls, ip)
	}
	ls = append(ls, tcp)
	if len(s.payload) > 0 {
		ls = append(ls, gopacket.Payload(s.payload))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	s.write(t, buf.Bytes())
}
