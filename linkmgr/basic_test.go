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
