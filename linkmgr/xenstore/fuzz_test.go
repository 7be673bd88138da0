package xenstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// seedMessages are valid server messages, as the store sends them, with
// req_id 1 (the id of a new client's first request).
func seedMessages() [][]byte {
	msgs := []*Message{
		{Op: OpRead, ReqID: 1, Payload: []byte("value")},
		{Op: OpRead, ReqID: 1, Payload: []byte{}},
		{Op: OpDirectory, ReqID: 1, Payload: []byte("a\x00bb\x00ccc\x00")},
		{Op: OpGetPerms, ReqID: 1, Payload: []byte("n0\x00r5\x00b32757\x00")},
		{Op: OpWrite, ReqID: 1, Payload: []byte("OK\x00")},
		{Op: OpTransactionStart, ReqID: 1, Payload: []byte("17\x00")},
		{Op: OpGetDomainPath, ReqID: 1, Payload: []byte("/local/domain/3\x00")},
		{Op: OpError, ReqID: 1, Payload: []byte("ENOENT\x00")},
		{Op: OpError, ReqID: 1, TxID: 9, Payload: []byte("EAGAIN\x00")},
		{Op: OpWatch, ReqID: 1, Payload: []byte("OK\x00")},
		{Op: OpWatchEvent, Payload: []byte("/a/b\x00tok\x00")},
		{Op: OpWatchEvent, Payload: []byte("@releaseDomain\x00t\x00")},
	}
	var out [][]byte
	for _, m := range msgs {
		b, err := m.AppendMarshal(nil)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	// A watch reply followed by its initial event.
	out = append(out, append(bytes.Clone(out[9]), out[10]...))
	// A directory too large for one reply, then listed in two parts.
	var parts []byte
	for _, m := range []*Message{
		{Op: OpError, ReqID: 1, Payload: []byte("E2BIG\x00")},
		{Op: OpDirectoryPart, ReqID: 2, Payload: []byte("7\x00a\x00")},
		{Op: OpDirectoryPart, ReqID: 3, Payload: []byte("7\x00b\x00\x00")},
	} {
		parts, _ = m.AppendMarshal(parts)
	}
	return append(out, parts)
}

// FuzzParseMessage feeds arbitrary bytes to the message decoder and every
// reply parser. Decoded messages must re-encode to the same bytes, and
// parsed payloads must round-trip.
func FuzzParseMessage(f *testing.F) {
	for _, s := range seedMessages() {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, n, err := ParseMessage(data, MaxPayload)
		rm, rerr := ReadMessage(bytes.NewReader(data), MaxPayload)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("ParseMessage err %v, ReadMessage err %v", err, rerr)
		}
		if err != nil {
			if !errors.Is(err, ErrProtocol) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if m.Op != rm.Op || m.ReqID != rm.ReqID || m.TxID != rm.TxID || !bytes.Equal(m.Payload, rm.Payload) {
			t.Fatalf("decoders disagree: %+v vs %+v", m, rm)
		}
		b, err := m.AppendMarshal(nil)
		if err != nil || !bytes.Equal(b, data[:n]) {
			t.Fatalf("re-encoding differs: %x vs %x (%v)", b, data[:n], err)
		}
		p := m.Payload
		if strs, err := SplitStrings(p); err == nil {
			var j []byte
			for _, s := range strs {
				j = AppendString(j, s)
			}
			if !bytes.Equal(j, p) {
				t.Fatalf("SplitStrings round trip: %q vs %q", j, p)
			}
		}
		if s, err := ParseString(p); err == nil && !bytes.Equal(AppendString(nil, s), p) {
			t.Fatalf("ParseString round trip: %q", p)
		}
		if ev, err := ParseWatchEvent(p); err == nil {
			again, err := ParseWatchEvent(AppendString(AppendString(nil, ev.Path), ev.Token))
			if err != nil || again != ev {
				t.Fatalf("watch event round trip: %+v vs %+v (%v)", ev, again, err)
			}
		}
		if perms, err := parsePermsReply(p); err == nil {
			var j []byte
			for _, pm := range perms {
				j = AppendString(j, pm.String())
			}
			if !bytes.Equal(j, p) {
				t.Fatalf("perms round trip: %q vs %q", j, p)
			}
		}
		if names, err := parseDirectory(p); err == nil {
			for _, n := range names {
				if n == "" {
					t.Fatal("empty child name accepted")
				}
			}
		}
		if errno, name, err := ParseError(p); err == nil {
			if known, ok := ParseErrno(name); ok && (known != errno || ErrnoName(errno) != name) {
				t.Fatalf("error name %q -> %v", name, errno)
			}
		}
	})
}

// scriptRW is a connection whose server side is a fixed byte stream: reads
// wait for the first request to be written, then return the script, then
// io.EOF.
type scriptRW struct {
	mu      sync.Mutex
	wrote   chan struct{}
	once    sync.Once
	closed  chan struct{}
	closeMu sync.Once
	r       *bytes.Reader
}

func newScriptRW(script []byte) *scriptRW {
	return &scriptRW{wrote: make(chan struct{}), closed: make(chan struct{}), r: bytes.NewReader(script)}
}

func (s *scriptRW) Read(p []byte) (int, error) {
	select {
	case <-s.wrote:
	case <-s.closed:
		return 0, net.ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Read(p)
}

func (s *scriptRW) Write(p []byte) (int, error) {
	select {
	case <-s.closed:
		return 0, net.ErrClosed
	default:
	}
	s.once.Do(func() { close(s.wrote) })
	return len(p), nil
}

func (s *scriptRW) Close() error {
	s.closeMu.Do(func() { close(s.closed) })
	return nil
}

// FuzzClientReplies runs one client call against a server that answers
// with arbitrary bytes. The call must return promptly with a result, a
// store error, a protocol error or net.ErrClosed, and never panic.
func FuzzClientReplies(f *testing.F) {
	for _, s := range seedMessages() {
		for which := range uint8(8) {
			f.Add(which, s)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, script []byte) {
		c := NewClient(newScriptRW(script))
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		switch which % 8 {
		case 0:
			_, err = c.Read(ctx, "/a")
		case 1:
			_, err = c.Directory(ctx, "/a")
		case 2:
			_, err = c.GetPerms(ctx, "/a")
		case 3:
			err = c.Write(ctx, "/a", "v")
		case 4:
			var tx *Tx
			if tx, err = c.Begin(ctx); err == nil && tx.ID() == 0 {
				t.Fatal("transaction id 0 accepted")
			}
		case 5:
			_, err = c.GetDomainPath(ctx, 3)
		case 6:
			var w *Watch
			if w, err = c.Watch(ctx, "/a", "tok"); err == nil {
				// Drain whatever events the script holds until the
				// connection ends.
				for ev := range w.Events() {
					if ev.Token != "tok" || ev.Path == "" {
						t.Fatalf("bad event %+v", ev)
					}
				}
				w.Close()
			}
		case 7:
			err = c.Transaction(ctx, func(tx *Tx) error { return tx.Write(ctx, "/a", "v") })
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal("call hung")
		}
		var xe *Error
		if err != nil && !errors.As(err, &xe) && !errors.Is(err, ErrProtocol) && !errors.Is(err, net.ErrClosed) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
