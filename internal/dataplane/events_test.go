package dataplane

import (
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
