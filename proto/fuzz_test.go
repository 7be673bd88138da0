package proto

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the decoder. It must never panic; a
// frame it accepts must re-encode to a frame that decodes to the same header
// and message, and the canonical encoding must be stable.
func FuzzDecode(f *testing.F) {
	seeds := [][]byte{
		Hello{Version: 1, Dom: 3, MaxFrame: DefaultMaxFrame}.AppendFrame(nil, 0),
		ConnectReq{DstPort: 80, SrcPort: 1, Window: 1 << 16}.AppendFrame(nil, 1),
		ConnectRsp{Status: StatusNoPort}.AppendFrame(nil, 1),
		Data{Payload: []byte("hello")}.AppendFrame(nil, 2),
		Credit{BufAlloc: 4096, FwdCnt: 12}.AppendFrame(nil, 2),
		Shutdown{How: ShutWrite}.AppendFrame(nil, 2),
		Disconnect{Reason: ReasonReset}.AppendFrame(nil, 0),
		frame(7, 8, 1, 0, 0, 0, 1, 2, 3, 4),
		frame(9, 1),
		{4, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
	}
	for _, s := range seeds {
		f.Add(s, uint32(DefaultMaxFrame))
	}
	f.Fuzz(func(t *testing.T, b []byte, maxData uint32) {
		h, m, n, err := Parse(b, maxData)
		if err != nil {
			if m != nil {
				t.Fatalf("non-nil message %#v with error %v", m, err)
			}
			if !errors.Is(err, ErrShort) && !errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrLength) &&
				!errors.Is(err, ErrConnID) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrField) {
				t.Fatalf("error %v is none of the sentinels", err)
			}
			return
		}
		if n != h.FrameLen() || n > len(b) {
			t.Fatalf("n = %d for %v with %d bytes", n, h, len(b))
		}
		if m.Type() != h.Type {
			t.Fatalf("message type %v under header %v", m.Type(), h)
		}
		enc := m.AppendFrame(nil, h.Conn)
		h2, m2, n2, err := Parse(enc, maxData)
		if err != nil {
			t.Fatalf("re-encoded %x does not parse: %v", enc, err)
		}
		if n2 != len(enc) || h2.Type != h.Type || h2.Conn != h.Conn {
			t.Fatalf("header %v n %d after round trip of %v", h2, n2, h)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip %#v -> %#v", m, m2)
		}
		if enc2 := m2.AppendFrame(nil, h2.Conn); string(enc2) != string(enc) {
			t.Fatalf("encoding not stable: %x then %x", enc, enc2)
		}
	})
}
