package dataplane

import (
	"time"

	"encoding/binary"
	"testing"
)

// The hand-written decoding of connection events reads what
// encoding/binary reads of the generated type.
func TestConnEventDecoding(t *testing.T) {
	want := hbfConnEvent{TimeNs: 0x0102030405060708, Type: uint8(hbfEventTypeEVENT_CONNECTION), Family: 6,
		Ifindex: 0x0a0b0c0d, Sport: 0x1234, Dport: 0x5678}
	for i := range want.Saddr.B {
		want.Saddr.B[i], want.Daddr.B[i] = byte(i+1), byte(0x80+i)
	}
	b, err := binary.Append(nil, binary.NativeEndian, &want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeConnEvent(b)
	if err != nil || got != want {
		t.Errorf("decoded %+v (%v), want %+v", got, err, want)
	}
	if _, err := decodeConnEvent(b[:len(b)-1]); err == nil {
		t.Error("a short event decoded")
	}
}

// Connection events wake the reader while traffic is light, the first
// two of each window, and not once the window before held a flood: the
// program's own counts say which it did.
func TestConnectionEventsWakeTheReaderOnlyWhileLight(t *testing.T) {
	d := newTestDP(t, defaults)
	woken := func() uint32 {
		var n uint32
		if err := d.objs.HbfEventsWoken.Get(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	syn := func(i int) { d.run(tcpSYN("198.51.100.7", "203.0.113.5", uint16(40000+i), 443)) }
	for i := range 3 {
		syn(i)
	}
	if n := woken(); n != 2 {
		t.Errorf("light traffic: %d wakeups in the window, want 2", n)
	}
	// A window of a flood, then the next: its events wake nobody.
	for i := 3; i < 3+100; i++ {
		syn(i)
	}
	d.advance(20 * time.Millisecond)
	syn(200)
	if n := woken(); n != 0 {
		t.Errorf("after a window of 101 events: %d wakeups, want 0", n)
	}
	// Two quiet windows later, traffic is light again.
	d.advance(40 * time.Millisecond)
	syn(201)
	if n := woken(); n != 1 {
		t.Errorf("after the flood stopped: %d wakeups, want 1", n)
	}
	if got := len(d.drain()); got != 105 {
		t.Errorf("%d connection events read, want 105: none lost to the wakeup rules", got)
	}
}
