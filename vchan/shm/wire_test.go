package shm

import (
	"bytes"
	"errors"
	"testing"
)

func TestHelloRoundTrip(t *testing.T) {
	for _, h := range []hello{
		{typ: msgHello, domain: 0, port: 1, arg: 5},
		{typ: msgAccept, domain: 0x7FEF, port: maxPort},
		{typ: msgRefuse, domain: 3, port: 7, arg: refuseBound},
	} {
		b := h.append(nil)
		if len(b) != helloLen {
			t.Fatalf("%+v: %d bytes", h, len(b))
		}
		got, err := parseHello(b)
		if err != nil || got != h {
			t.Errorf("parse(append(%+v)) = %+v, %v", h, got, err)
		}
	}
}

func TestParseHelloRejects(t *testing.T) {
	good := hello{typ: msgHello, domain: 2, port: 3, arg: 1}.append(nil)
	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	for name, b := range map[string][]byte{
		"short":          good[:15],
		"long":           append(bytes.Clone(good), 0),
		"magic":          mod(func(b []byte) { b[0] = 'Y' }),
		"version":        mod(func(b []byte) { b[4] = 1 }),
		"type":           mod(func(b []byte) { b[5] = 9 }),
		"domain":         mod(func(b []byte) { b[6], b[7] = 0xF0, 0x7F }),
		"port zero":      mod(func(b []byte) { b[8] = 0 }),
		"port too big":   mod(func(b []byte) { b[9] = 0x10 }),
		"accept w/ code": mod(func(b []byte) { b[5] = msgAccept }),
		"refuse no code": mod(func(b []byte) { b[5], b[12] = msgRefuse, 0 }),
		"refuse unknown": mod(func(b []byte) { b[5], b[12] = msgRefuse, 99 }),
	} {
		if _, err := parseHello(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", name, err)
		}
	}
}

// recorder is a streamHandler that writes down what it is told.
type recorder struct {
	notices []notice
	cancels []notice
	byes    int
}

func (r *recorder) notice(n notice, cancel bool) {
	if cancel {
		r.cancels = append(r.cancels, n)
	} else {
		r.notices = append(r.notices, n)
	}
}
func (r *recorder) bye() { r.byes++ }

func TestStreamDecoderSplitFrames(t *testing.T) {
	n1 := notice{granter: 1, offset: 21, ref: 8}
	n2 := notice{granter: 2, offset: 4095, ref: 0xFFFFFFFF}
	var s []byte
	s = n1.append(s, tokNotice)
	s = n2.append(s, tokNotice)
	s = n1.append(s, tokCancel)
	s = append(s, tokBye)

	// Every way of cutting the stream in two gives the same result.
	for cut := 0; cut <= len(s); cut++ {
		var d streamDecoder
		var r recorder
		if err := d.feed(s[:cut], &r); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if err := d.feed(s[cut:], &r); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if len(r.notices) != 2 || r.notices[0] != n1 || r.notices[1] != n2 ||
			len(r.cancels) != 1 || r.cancels[0] != n1 || r.byes != 1 {
			t.Fatalf("cut %d: %+v", cut, r)
		}
	}
}

func TestStreamDecoderRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"unknown token":    {0x00},
		"event token":      {0x01}, // events travel on the eventfds
		"after bye":        {tokBye, tokBye},
		"notice after bye": notice{granter: 1, offset: 1, ref: 8}.append([]byte{tokBye}, tokNotice),
		"offset":           notice{granter: 1, offset: 4096, ref: 8}.append(nil, tokNotice),
		"ref zero":         notice{granter: 1, offset: 1, ref: 0}.append(nil, tokCancel),
		"reserved domid":   notice{granter: 0x7FF0, offset: 1, ref: 1}.append(nil, tokNotice),
	} {
		var d streamDecoder
		var r recorder
		if err := d.feed(b, &r); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", name, err)
		}
	}
}

func FuzzParseHello(f *testing.F) {
	f.Add(hello{typ: msgHello, domain: 2, port: 3, arg: 1}.append(nil))
	f.Add(hello{typ: msgRefuse, domain: 2, port: 3, arg: refuseWrongPeer}.append(nil))
	f.Add([]byte("XEVT"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHello(b)
		if err != nil {
			return
		}
		if again := h.append(nil); !bytes.Equal(again, b) {
			t.Fatalf("round trip: %x -> %+v -> %x", b, h, again)
		}
	})
}

func FuzzStreamDecoder(f *testing.F) {
	f.Add([]byte{tokBye}, 1)
	f.Add(notice{granter: 1, offset: 21, ref: 8}.append(nil, tokNotice), 4)
	f.Add(append(notice{granter: 1, offset: 21, ref: 8}.append(nil, tokCancel), tokBye), 9)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		var d1 streamDecoder
		var r1 recorder
		err1 := d1.feed(b, &r1)

		// Feeding in two pieces must decide the same way and decode the
		// same frames.
		if cut < 0 {
			cut = -cut
		}
		if len(b) > 0 {
			cut %= len(b) + 1
		} else {
			cut = 0
		}
		var d2 streamDecoder
		var r2 recorder
		err2 := d2.feed(b[:cut], &r2)
		if err2 == nil {
			err2 = d2.feed(b[cut:], &r2)
		}
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("whole: %v, split at %d: %v", err1, cut, err2)
		}
		if err1 != nil {
			if !errors.Is(err1, ErrProtocol) {
				t.Fatalf("error not ErrProtocol: %v", err1)
			}
			return
		}
		if r1.byes != r2.byes ||
			len(r1.notices) != len(r2.notices) || len(r1.cancels) != len(r2.cancels) {
			t.Fatalf("whole %+v, split %+v", r1, r2)
		}
		for i, n := range r1.notices {
			if r2.notices[i] != n {
				t.Fatalf("notice %d differs", i)
			}
		}
		// Re-encoding what was decoded gives the input back.
		if len(r1.cancels) == 0 && d1.npart == 0 {
			var again []byte
			for _, n := range r1.notices {
				again = n.append(again, tokNotice)
			}
			if r1.byes > 0 {
				again = append(again, tokBye)
			}
			if !bytes.Equal(again, b) {
				t.Fatalf("re-encoded %x, input %x", again, b)
			}
		}
	})
}
