package proto

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// frame builds a raw frame by hand, independently of the encoders.
func frame(typ byte, conn uint32, body ...byte) []byte {
	n := uint32(len(body))
	b := []byte{typ, 0, 0, 0,
		byte(conn), byte(conn >> 8), byte(conn >> 16), byte(conn >> 24),
		byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}
	return append(b, body...)
}

func TestEncodeBytes(t *testing.T) {
	tests := []struct {
		name string
		m    Message
		conn uint32
		want []byte
	}{
		{"hello", Hello{Version: 1, Dom: 0x0102, MaxFrame: 0x10000, Features: 0x0807060504030201}, 0,
			frame(1, 0, 1, 0, 2, 1, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8)},
		{"hello ignores conn", Hello{Version: 1, Dom: 3, MaxFrame: 256}, 9,
			frame(1, 0, 1, 0, 3, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
		{"connect req", ConnectReq{DstPort: 80, SrcPort: 0x01020304, Window: 0x40000}, 7,
			frame(2, 7, 80, 0, 0, 0, 4, 3, 2, 1, 0, 0, 4, 0)},
		{"connect rsp", ConnectRsp{Status: StatusBacklogFull, Window: 5}, 0xdeadbeef,
			frame(3, 0xdeadbeef, 3, 0, 0, 0, 5, 0, 0, 0)},
		{"data", Data{Payload: []byte("hi!")}, 2, frame(4, 2, 'h', 'i', '!')},
		{"credit", Credit{BufAlloc: 0x100, FwdCnt: 0x0102030405060708}, 4,
			frame(5, 4, 0, 1, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1)},
		{"shutdown both", Shutdown{How: ShutRead | ShutWrite}, 1, frame(6, 1, 3, 0, 0, 0)},
		{"shutdown drops unknown bits", Shutdown{How: 0xf1}, 1, frame(6, 1, 1, 0, 0, 0)},
		{"disconnect link", Disconnect{Reason: ReasonProtocol}, 0, frame(7, 0, 2, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("xx")
			got := tt.m.AppendFrame(prefix, tt.conn)
			if !bytes.Equal(got[:2], prefix) {
				t.Fatalf("prefix clobbered: %x", got)
			}
			if !bytes.Equal(got[2:], tt.want) {
				t.Fatalf("AppendFrame = %x, want %x", got[2:], tt.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	const max = 1024
	tests := []struct {
		name    string
		in      []byte
		maxData uint32
		want    Message
		wantH   Header
		wantN   int
		wantErr error
	}{
		{name: "hello", in: frame(1, 0, 1, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0),
			want: Hello{Version: 1, Dom: 5, MaxFrame: 65536}, wantH: Header{TypeHello, 0, 16}, wantN: 28},
		{name: "hello newer version with longer body",
			in:   frame(1, 0, 2, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb),
			want: Hello{Version: 2, Dom: 5, MaxFrame: 65536}, wantH: Header{TypeHello, 0, 18}, wantN: 30},
		{name: "hello clamps max frame", in: frame(1, 0, 1, 0, 5, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0),
			want: Hello{Version: 1, Dom: 5, MaxFrame: MaxFrame}, wantH: Header{TypeHello, 0, 16}, wantN: 28},
		{name: "hello version 0", in: frame(1, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0), wantErr: ErrVersion},
		{name: "hello tiny frame", in: frame(1, 0, 1, 0, 5, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), wantErr: ErrField},
		{name: "hello on a conn", in: frame(1, 3, 1, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0), wantErr: ErrConnID},
		{name: "hello short body", in: frame(1, 0, 1, 0, 5, 0), wantErr: ErrLength},
		{name: "connect req", in: frame(2, 9, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0),
			want: ConnectReq{DstPort: 80, SrcPort: 1, Window: 65536}, wantH: Header{TypeConnectReq, 9, 12}, wantN: 24},
		{name: "connect req conn 0", in: frame(2, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0), wantErr: ErrConnID},
		{name: "connect rsp unknown status kept", in: frame(3, 9, 200, 0, 0, 0, 0, 1, 0, 0),
			want: ConnectRsp{Status: 200, Window: 256}, wantH: Header{TypeConnectRsp, 9, 8}, wantN: 20},
		{name: "data", in: frame(4, 6, 1, 2, 3), want: Data{Payload: []byte{1, 2, 3}}, wantH: Header{TypeData, 6, 3}, wantN: 15},
		{name: "data trailing bytes are the next frame", in: append(frame(4, 6, 1), 0xff, 0xff),
			want: Data{Payload: []byte{1}}, wantH: Header{TypeData, 6, 1}, wantN: 13},
		{name: "data empty", in: frame(4, 6), wantErr: ErrLength},
		{name: "data over max frame", in: frame(4, 6, make([]byte, 33)...), maxData: 32, wantErr: ErrLength},
		{name: "data at max frame", in: frame(4, 6, make([]byte, 32)...), maxData: 32,
			want: Data{Payload: make([]byte, 32)}, wantH: Header{TypeData, 6, 32}, wantN: 44},
		{name: "data conn 0", in: frame(4, 0, 1), wantErr: ErrConnID},
		{name: "data truncated", in: frame(4, 6, 1, 2, 3)[:14], wantErr: ErrShort},
		{name: "credit", in: frame(5, 2, 0, 0, 1, 0, 9, 9, 9, 9, 5, 0, 0, 0, 0, 0, 0, 0),
			want: Credit{BufAlloc: 65536, FwdCnt: 5}, wantH: Header{TypeCredit, 2, 16}, wantN: 28},
		{name: "credit short", in: frame(5, 2, 0, 0, 1, 0), wantErr: ErrLength},
		{name: "shutdown", in: frame(6, 2, 0xff, 1, 2, 3), want: Shutdown{How: ShutRead | ShutWrite}, wantH: Header{TypeShutdown, 2, 4}, wantN: 16},
		{name: "disconnect link", in: frame(7, 0, 4, 0, 0, 0), want: Disconnect{Reason: ReasonShutdown}, wantH: Header{TypeDisconnect, 0, 4}, wantN: 16},
		{name: "disconnect long body", in: frame(7, 8, 1, 0, 0, 0, 1, 2, 3, 4), want: Disconnect{Reason: ReasonReset}, wantH: Header{TypeDisconnect, 8, 8}, wantN: 20},
		{name: "control body too long", in: frame(7, 8, make([]byte, MaxControlBody+1)...), wantErr: ErrLength},
		{name: "unknown type", in: frame(8, 1, 0, 0, 0, 0), wantErr: ErrUnknownType},
		{name: "type zero", in: frame(0, 1), wantErr: ErrUnknownType},
		{name: "short header", in: frame(4, 1, 1)[:11], wantErr: ErrShort},
		{name: "empty", in: nil, wantErr: ErrShort},
		{name: "huge length", in: []byte{4, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, maxData: 1 << 31, wantErr: ErrLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			maxData := tt.maxData
			if maxData == 0 {
				maxData = max
			}
			h, m, n, err := Parse(tt.in, maxData)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if m != nil {
					t.Fatalf("message %#v on error, want plain nil", m)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if h != tt.wantH || n != tt.wantN {
				t.Fatalf("header %v n %d, want %v n %d", h, n, tt.wantH, tt.wantN)
			}
			if !reflect.DeepEqual(m, tt.want) {
				t.Fatalf("message %#v, want %#v", m, tt.want)
			}
		})
	}
}

func TestRoundTripAll(t *testing.T) {
	msgs := []struct {
		conn uint32
		m    Message
	}{
		{0, Hello{Version: Version, Dom: 7, MaxFrame: DefaultMaxFrame, Features: 1}},
		{1, ConnectReq{DstPort: 1, SrcPort: 2, Window: 3}},
		{1, ConnectRsp{Status: StatusDenied, Window: 4}},
		{1, Data{Payload: bytes.Repeat([]byte{7}, DefaultMaxFrame)}},
		{1, Credit{BufAlloc: 1 << 18, FwdCnt: 1 << 40}},
		{1, Shutdown{How: ShutWrite}},
		{1, Disconnect{Reason: ReasonCredit}},
		{0, Disconnect{Reason: ReasonIdle}},
	}
	// All frames back to back, as on a ring.
	var stream []byte
	for _, x := range msgs {
		stream = x.m.AppendFrame(stream, x.conn)
	}
	for i, x := range msgs {
		h, m, n, err := Parse(stream, DefaultMaxFrame)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if h.Conn != x.conn || h.Type != x.m.Type() {
			t.Fatalf("frame %d: header %v", i, h)
		}
		if !reflect.DeepEqual(m, x.m) {
			t.Fatalf("frame %d: %#v, want %#v", i, m, x.m)
		}
		stream = stream[n:]
	}
	if len(stream) != 0 {
		t.Fatalf("%d bytes left over", len(stream))
	}
}

func TestPutHeaderMatchesAppend(t *testing.T) {
	h := Header{Type: TypeData, Conn: 0xa1b2c3d4, Length: 4242}
	var buf [HeaderLen]byte
	for i := range buf {
		buf[i] = 0xee
	}
	PutHeader(buf[:], h)
	if want := AppendHeader(nil, h); !bytes.Equal(buf[:], want) {
		t.Fatalf("PutHeader %x, AppendHeader %x", buf, want)
	}
}

func TestDataPathDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 256)
	credit := Credit{BufAlloc: 1 << 16, FwdCnt: 99}.AppendFrame(nil, 3)
	data := Data{Payload: make([]byte, 100)}.AppendFrame(nil, 3)
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendHeader(buf[:0], Header{Type: TypeData, Conn: 3, Length: 100})
		buf = Credit{BufAlloc: 1, FwdCnt: 2}.AppendFrame(buf, 3)
		h, err := ParseHeader(credit, DefaultMaxFrame)
		if err != nil {
			panic(err)
		}
		if _, err := ParseCredit(credit[HeaderLen:h.FrameLen()]); err != nil {
			panic(err)
		}
		if _, err := ParseHeader(data, DefaultMaxFrame); err != nil {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame, want 0", allocs)
	}
}

func TestStrings(t *testing.T) {
	tests := []struct{ got, want string }{
		{TypeData.String(), "DATA_ind"},
		{Type(99).String(), "type(99)"},
		{StatusNoPort.String(), "no such port"},
		{Status(77).String(), "status(77)"},
		{ReasonCredit.String(), "credit overrun"},
		{Reason(50).String(), "reason(50)"},
		{Header{TypeCredit, 3, 16}.String(), "CREDIT conn=3 len=16"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func BenchmarkDataPath(b *testing.B) {
	payload := make([]byte, DefaultMaxFrame)
	frameBytes := Data{Payload: payload}.AppendFrame(nil, 5)
	b.Run("encode-header", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(HeaderLen)
		buf := make([]byte, 0, HeaderLen)
		for b.Loop() {
			buf = AppendHeader(buf[:0], Header{Type: TypeData, Conn: 5, Length: uint32(len(payload))})
		}
	})
	b.Run("parse-header", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(HeaderLen)
		for b.Loop() {
			if _, err := ParseHeader(frameBytes, DefaultMaxFrame); err != nil {
				b.Fatal(err)
			}
		}
	})
}
