package xenstored

import (
	"bytes"
	"testing"

	"idcfs/linkmgr/xenstore"
)

func seedRequests() [][]byte {
	msgs := []*xenstore.Message{
		{Op: xenstore.OpRead, ReqID: 1, Payload: []byte("/local/domain/0/domid\x00")},
		{Op: xenstore.OpWrite, ReqID: 2, Payload: []byte("/a/b\x00value")},
		{Op: xenstore.OpWrite, ReqID: 2, Payload: []byte("data/x\x00v")},
		{Op: xenstore.OpMkdir, ReqID: 3, Payload: []byte("/a/c\x00")},
		{Op: xenstore.OpRm, ReqID: 4, Payload: []byte("/a\x00")},
		{Op: xenstore.OpDirectory, ReqID: 5, Payload: []byte("/\x00")},
		{Op: xenstore.OpDirectoryPart, ReqID: 5, Payload: []byte("/local\x000\x00")},
		{Op: xenstore.OpGetPerms, ReqID: 6, Payload: []byte("/a/b\x00")},
		{Op: xenstore.OpSetPerms, ReqID: 7, Payload: []byte("/a/b\x00n0\x00r1\x00")},
		{Op: xenstore.OpGetDomainPath, ReqID: 8, Payload: []byte("1\x00")},
		{Op: xenstore.OpWatch, ReqID: 9, Payload: []byte("/a\x00tok\x00")},
		{Op: xenstore.OpWatch, ReqID: 9, Payload: []byte("@releaseDomain\x00r\x00")},
		{Op: xenstore.OpUnwatch, ReqID: 10, Payload: []byte("/a\x00tok\x00")},
		{Op: xenstore.OpTransactionStart, ReqID: 11, Payload: []byte("\x00")},
		{Op: xenstore.OpWrite, ReqID: 12, TxID: 1, Payload: []byte("/t\x00in tx")},
		{Op: xenstore.OpTransactionEnd, ReqID: 13, TxID: 1, Payload: []byte("T\x00")},
		{Op: xenstore.OpIsDomainIntroduced, ReqID: 14, Payload: []byte("1\x00")},
		{Op: xenstore.OpResetWatches, ReqID: 15, Payload: []byte("\x00")},
	}
	var out [][]byte
	var all []byte
	for _, m := range msgs {
		b, err := m.AppendMarshal(nil)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
		all = append(all, b...)
	}
	return append(out, all)
}

// FuzzRequest decodes arbitrary bytes as a stream of client requests and
// runs each against a server, as domain 0 and as domain 1. The server must
// never panic, must answer every decodable request with exactly one reply
// carrying its ids, must send only well-formed messages, and must keep the
// tree consistent.
func FuzzRequest(f *testing.F) {
	for _, s := range seedRequests() {
		f.Add(uint8(0), s)
		f.Add(uint8(1), s)
	}
	f.Fuzz(func(t *testing.T, dom uint8, data []byte) {
		s := New(nil)
		defer s.Close()
		if err := s.IntroduceDomain(1); err != nil {
			t.Fatal(err)
		}
		c := newConn(s, nil, uint32(dom%2))
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		for len(data) > 0 {
			m, n, err := xenstore.ParseMessage(data, xenstore.MaxPayload)
			if err != nil {
				return // the server drops such a connection
			}
			data = data[n:]
			c.omu.Lock()
			c.out = nil
			c.omu.Unlock()
			s.mu.Lock()
			c.handleLocked(m)
			checkTree(t, s.st)
			s.mu.Unlock()
			c.omu.Lock()
			out := c.out
			c.omu.Unlock()
			replies := 0
			for _, b := range out {
				r, used, err := xenstore.ParseMessage(b, xenstore.MaxPayload)
				if err != nil || used != len(b) {
					t.Fatalf("server sent a malformed message %x: %v", b, err)
				}
				switch r.Op {
				case xenstore.OpWatchEvent:
					if _, err := xenstore.ParseWatchEvent(r.Payload); err != nil {
						t.Fatalf("bad event %q", r.Payload)
					}
					continue
				case xenstore.OpError:
					if _, err := xenstore.ParseString(r.Payload); err != nil {
						t.Fatalf("bad error payload %q", r.Payload)
					}
				case m.Op:
				default:
					t.Fatalf("reply type %v to %v", r.Op, m.Op)
				}
				if r.ReqID != m.ReqID || r.TxID != m.TxID {
					t.Fatalf("reply ids %d/%d to %d/%d", r.ReqID, r.TxID, m.ReqID, m.TxID)
				}
				replies++
			}
			if replies != 1 {
				t.Fatalf("%d replies to %v %q", replies, m.Op, m.Payload)
			}
			if m.Op == xenstore.OpRead && bytes.Equal(m.Payload, []byte("/local/domain/0/domid\x00")) && dom%2 == 0 {
				if r, _, _ := xenstore.ParseMessage(out[0], xenstore.MaxPayload); r.Op == xenstore.OpRead && string(r.Payload) != "0" {
					t.Fatalf("domid of dom0 read as %q", r.Payload)
				}
			}
		}
	})
}
