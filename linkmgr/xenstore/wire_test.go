package xenstore

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

func TestParseMessage(t *testing.T) {
	valid, _ := (&Message{Op: OpRead, ReqID: 0x01020304, TxID: 9, Payload: []byte("abc")}).AppendMarshal(nil)
	if !bytes.Equal(valid[:16], []byte{2, 0, 0, 0, 4, 3, 2, 1, 9, 0, 0, 0, 3, 0, 0, 0}) {
		t.Fatalf("header bytes %x are not little-endian type, req_id, tx_id, len", valid[:16])
	}
	over := bytes.Clone(valid[:16])
	over[12], over[13] = 0x01, 0x10 // 4097
	device := bytes.Clone(valid[:16])
	device[12], device[13] = 0xf1, 0x0f // 4081
	tests := []struct {
		name    string
		in      []byte
		max     int
		wantErr error
		used    int
	}{
		{"valid", valid, MaxPayload, nil, len(valid)},
		{"trailing bytes left alone", append(bytes.Clone(valid), 1, 2, 3), MaxPayload, nil, len(valid)},
		{"empty", nil, MaxPayload, io.EOF, 0},
		{"short header", valid[:15], MaxPayload, io.ErrUnexpectedEOF, 0},
		{"short payload", valid[:18], MaxPayload, io.ErrUnexpectedEOF, 0},
		{"length past the limit", over, MaxPayload, ErrProtocol, 0},
		{"length past the device limit", device, MaxPayloadDevice, ErrProtocol, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, n, err := ParseMessage(tt.in, tt.max)
			if !errors.Is(err, tt.wantErr) || n != tt.used {
				t.Fatalf("ParseMessage = %v, %d, %v", m, n, err)
			}
			rm, rerr := ReadMessage(bytes.NewReader(tt.in), tt.max)
			if !errors.Is(rerr, tt.wantErr) {
				t.Fatalf("ReadMessage error %v, want %v", rerr, tt.wantErr)
			}
			if err == nil && (m.Op != OpRead || m.ReqID != 0x01020304 || m.TxID != 9 || string(m.Payload) != "abc" || string(rm.Payload) != "abc") {
				t.Fatalf("decoded %+v / %+v", m, rm)
			}
		})
	}
	if _, err := (&Message{Payload: make([]byte, MaxPayload+1)}).AppendMarshal(nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("marshal of an oversized payload: %v", err)
	}
}

func TestPayloadStrings(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		split  []string
		splitE bool
		one    string
		oneE   bool
	}{
		{"empty", "", nil, false, "", true},
		{"one", "abc\x00", []string{"abc"}, false, "abc", false},
		{"empty string", "\x00", []string{""}, false, "", false},
		{"two", "a\x00b\x00", []string{"a", "b"}, false, "", true},
		{"unterminated", "abc", nil, true, "", true},
		{"unterminated second", "a\x00b", nil, true, "", true},
		{"not UTF-8", "\xff\x00", nil, true, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SplitStrings([]byte(tt.in))
			if (err != nil) != tt.splitE || !slices.Equal(got, tt.split) {
				t.Fatalf("SplitStrings = %q, %v", got, err)
			}
			if err != nil && !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v does not wrap ErrProtocol", err)
			}
			one, err := ParseString([]byte(tt.in))
			if (err != nil) != tt.oneE || one != tt.one {
				t.Fatalf("ParseString = %q, %v", one, err)
			}
		})
	}
}

func TestParseWatchEvent(t *testing.T) {
	tests := []struct {
		in   string
		want Event
		ok   bool
	}{
		{"/a\x00tok\x00", Event{"/a", "tok"}, true},
		{"/a\x00\x00", Event{"/a", ""}, true},
		{"@releaseDomain\x00t\x00extra", Event{"@releaseDomain", "t"}, true},
		{"/a\x00tok", Event{}, false},
		{"/a", Event{}, false},
		{"\x00t\x00", Event{}, false},
		{"/\xff\x00t\x00", Event{}, false},
		{"/a\x00\xfe\x00", Event{}, false},
	}
	for _, tt := range tests {
		got, err := ParseWatchEvent([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseWatchEvent(%q) = %+v, %v", tt.in, got, err)
		}
	}
}

func TestOpNames(t *testing.T) {
	if OpRead.String() != "READ" || Op(20).String() != "Op(20)" || Op(20).Known() || !OpSetQuota.Known() {
		t.Fatal("op names")
	}
}
