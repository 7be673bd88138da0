package linkmgr

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"idcfs/proto"
	"idcfs/vchan"
)

// TestCreditCutShortThenDisconnect: a CREDIT put on the ring by a Read
// (sendCtrlNowLocked) that finds room for only part of it leaves the rest
// first in line, and a teardown right then still sends whole frames: the
// rest of the CREDIT, then the DISCONNECT_ind.
func TestCreditCutShortThenDisconnect(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1})
	m := h.manager(1)
	srv, err := vchan.NewServer(h.heap.Domain(1), 2, 1024, 1024)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := vchan.NewClient(h.heap.Domain(2), 1, srv.RingRef(), srv.Port())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := srv.WaitConnected(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	l := newLink(m, 2, roleServer)
	l.ep, l.state = srv, lsUp
	c := newConn(m, l, 1, Addr{Dom: 1, Port: 5}, Addr{Dom: 2, Port: 1}, false)
	c.state, c.fwdCnt = stEstablished, 12345

	const room = 5
	filler := srv.Stats().WriteRing - room
	if _, err := srv.Write(make([]byte, filler)); err != nil {
		t.Fatal(err)
	}
	l.queueCredit(c)
	frameLen := proto.HeaderLen + 16
	l.mu.Lock()
	cut, queued := l.cut, len(l.ctrl)
	l.mu.Unlock()
	if cut != frameLen-room || queued != frameLen-room {
		t.Fatalf("after a CREDIT cut short: cut %d, %d bytes queued; want %d and %d", cut, queued, frameLen-room, frameLen-room)
	}

	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(cli)
		got <- b
	}()
	l.fail(errors.New("test teardown"), proto.ReasonShutdown, true)
	l.cancel()
	b := <-got
	if len(b) < filler || !bytes.Equal(b[:filler], make([]byte, filler)) {
		t.Fatalf("read %d bytes, want the %d filler bytes first", len(b), filler)
	}
	b = b[filler:]
	var types []proto.Type
	for len(b) > 0 {
		fh, err := proto.ParseHeader(b, proto.MaxFrame)
		if err != nil || len(b) < proto.HeaderLen+int(fh.Length) {
			t.Fatalf("frames after the filler are broken at %x: %v", b, err)
		}
		body := b[proto.HeaderLen : proto.HeaderLen+int(fh.Length)]
		types = append(types, fh.Type)
		switch fh.Type {
		case proto.TypeCredit:
			cr, err := proto.ParseCredit(body)
			if err != nil || fh.Conn != 1 || cr.FwdCnt != 12345 {
				t.Errorf("CREDIT on conn %d: %+v, %v", fh.Conn, cr, err)
			}
		case proto.TypeDisconnect:
			d, err := proto.ParseDisconnect(body)
			if err != nil || fh.Conn != 0 || d.Reason != proto.ReasonShutdown {
				t.Errorf("DISCONNECT_ind on conn %d: %+v, %v", fh.Conn, d, err)
			}
		}
		b = b[proto.HeaderLen+int(fh.Length):]
	}
	if len(types) != 2 || types[0] != proto.TypeCredit || types[1] != proto.TypeDisconnect {
		t.Fatalf("frames after the filler: %v, want CREDIT then DISCONNECT_ind", types)
	}
}
