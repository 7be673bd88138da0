package linkmgr

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"idcfs/vchan"
)

func TestLoopback(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1})
	m := h.manager(1)
	ln, err := m.Listen(80, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 10*time.Second)
	c, err := m.Dial(ctx, 1, 80)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("hello over the loopback link")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %q", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Read(got); err != io.EOF {
		t.Fatalf("read after peer close: %d, %v; want EOF", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.LocalAddr().(Addr).Port != 80 || c.RemoteAddr().String() != "dom(1):80" {
		t.Fatalf("addresses %v %v", s.LocalAddr(), c.RemoteAddr())
	}
}

func TestTwoDomains(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	m1 := h.manager(1)
	m2 := h.manager(2)
	ln, err := m2.Listen(7, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 10*time.Second)
	for _, dialer := range []*Manager{m1} {
		c, err := dialer.Dial(ctx, 2, 7)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte("0123456789abcdef"), 100000)
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(data)
			if err == nil {
				err = c.CloseWrite()
			}
			errc <- err
		}()
		got, err := io.ReadAll(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("got %d bytes, want %d", len(got), len(data))
		}
		// The other direction still works after the half-close.
		if _, err := s.Write([]byte("reply")); err != nil {
			t.Fatal(err)
		}
		s.Close()
		r, err := io.ReadAll(c)
		if err != nil || string(r) != "reply" {
			t.Fatalf("reply %q, %v", r, err)
		}
		c.Close()
	}
	if _, err := m1.Dial(ctx, 2, 8); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial to a port without listener: %v, want ErrRefused", err)
	}
	var oe *net.OpError
	if _, err := m2.Dial(ctx, 1, 9); !errors.As(err, &oe) || !errors.Is(err, ErrRefused) {
		t.Fatalf("reverse dial: %v", err)
	}
}

// TestLinkCounters checks that each frame one side counts as sent, the
// other counts as received, control frames (HELLO, CONNECT_req/rsp,
// SHUTDOWN, DISCONNECT) included, and that bytes match the data moved.
func TestLinkCounters(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	m1 := h.manager(1)
	m2 := h.manager(2)
	ln, err := m2.Listen(7, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 10*time.Second)
	c, err := m1.Dial(ctx, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("pong!")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf[:4]); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	link := func(m *Manager, peer vchan.DomID) LinkInfo {
		for _, li := range m.Links() {
			if li.Peer == peer {
				return li
			}
		}
		t.Fatalf("dom %d has no link to dom %d", m.Self(), peer)
		return LinkInfo{}
	}
	waitFor(t, "both sides to count the same frames", func() bool {
		a, b := link(m1, 2), link(m2, 1)
		return a.FramesOut == b.FramesIn && b.FramesOut == a.FramesIn
	})
	a, b := link(m1, 2), link(m2, 1)
	// At least HELLO + CONNECT_req + DATA from the dialer and HELLO +
	// CONNECT_rsp + DATA from the acceptor.
	if a.FramesOut < 3 || b.FramesOut < 3 {
		t.Errorf("frames out: dialer %d, acceptor %d; want at least 3 each", a.FramesOut, b.FramesOut)
	}
	if a.BytesOut != 4 || b.BytesIn != 4 || b.BytesOut != 5 || a.BytesIn != 5 {
		t.Errorf("bytes: dialer out %d in %d, acceptor out %d in %d; want 4 5 5 4",
			a.BytesOut, a.BytesIn, b.BytesOut, b.BytesIn)
	}
}
