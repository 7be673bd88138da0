package linkmgr

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"idcfs/vchan"
)

// slowTimeout is a connect timeout long enough that an error reported
// before it must have been detected, not waited out.
func slowTimeout(c *Config) { c.ConnectTimeout = 30 * time.Second }

func TestDialErrors(t *testing.T) {
	checkLeaks(t)
	// 1, 2, 3 are set up for idcfs; 4 exists but is not; 9 does not exist.
	h := newTestHost(t, []vchan.DomID{1, 2, 3}, 4)
	m1 := h.manager(1, slowTimeout)
	h.manager(2, slowTimeout)
	m4 := h.manager(4, slowTimeout)
	if _, err := m1.Listen(5, 0); err != nil {
		t.Fatal(err)
	}
	m4.Listen(5, 0)

	tests := []struct {
		name    string
		m       *Manager
		peer    vchan.DomID
		port    uint32
		want    error
		wantMsg string
	}{
		{"no listener", m1, 2, 99, ErrRefused, "no such port"},
		{"no such domain", m1, 9, 5, ErrUnreachable, "does not exist or dom 1 may not link"},
		{"no daemon", m1, 3, 5, ErrUnreachable, "no idcfs daemon"},
		{"peer not permitted", m1, 4, 5, ErrUnreachable, "does not exist or dom 1 may not link"},
		{"self not set up", m4, 1, 5, ErrUnreachable, "not set up for idcfs"},
		{"loopback of a domain not set up works", m4, 4, 5, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			c, err := tt.m.Dial(ctx, tt.peer, tt.port)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Dial: %v, want %v", err, tt.want)
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "dial" {
				t.Fatalf("Dial error %T is not a dial *net.OpError", err)
			}
			if !containsStr(err.Error(), tt.wantMsg) {
				t.Fatalf("Dial error %q does not say %q", err, tt.wantMsg)
			}
			if errors.Is(err, ErrTimeout) || ctx.Err() != nil {
				t.Fatalf("error after waiting: %v", err)
			}
		})
	}
}

func containsStr(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (func() bool {
		for i := 0; i+len(sub) <= len(s); i++ {
			if s[i:i+len(sub)] == sub {
				return true
			}
		}
		return false
	})()
}

func TestDialCancelAndTimeout(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	m1 := h.manager(1, func(c *Config) { c.ConnectTimeout = 500 * time.Millisecond })
	// Dom 2's daemon is announced but never answers: a crashed daemon whose
	// key is stale.
	if err := h.client(2).Write(context.Background(), DaemonPath(2), "12345"); err != nil {
		t.Fatal(err)
	}
	_, err := m1.Dial(context.Background(), 2, 1)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("dial to a dead daemon: %v, want ErrTimeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m1.Dial(ctx, 2, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("dial with cancelled ctx: %v", err)
	}
	// The ring the attempt published is removed when the setup gives up.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := h.dom0.Read(context.Background(), RingPath(1, 2)+"/ring-ref")
		if errors.Is(err, syscall.ENOENT) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ring of the failed setup still published: %v", err)
		}
	}
}

func TestBacklogAndListener(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	m1 := h.manager(1)
	m2 := h.manager(2)
	ln, err := m2.Listen(80, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Listen(80, 1); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("second Listen: %v", err)
	}
	if _, err := ln.TryAccept(); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("TryAccept on empty queue: %v", err)
	}
	ctx := testCtx(t, 10*time.Second)
	var conns []*Conn
	for i := 0; i < 2; i++ {
		c, err := m1.Dial(ctx, 2, 80)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if _, err := m1.Dial(ctx, 2, 80); !errors.Is(err, ErrRefused) || !containsStr(err.Error(), "backlog full") {
		t.Fatalf("dial beyond the backlog: %v", err)
	}
	s, err := ln.TryAccept()
	if err != nil {
		t.Fatal(err)
	}
	// Data written before Accept is there.
	if _, err := conns[1].Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(ctx, 50*time.Millisecond)
	s2, err := ln.Accept(actx)
	acancel()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if n, err := s2.Read(buf); err != nil || string(buf[:n]) != "early" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	actx, acancel = context.WithTimeout(ctx, 50*time.Millisecond)
	if _, err := ln.Accept(actx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Accept with nothing pending: %v", err)
	}
	acancel()
	// A queued connection is reset when the listener closes.
	c3, err := m1.Dial(ctx, 2, 80)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept(context.Background())
		done <- err
	}()
	for ln.Pending() != 0 {
		time.Sleep(time.Millisecond) // the goroutine above takes c3's peer
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c4, err := m1.Dial(ctx, 2, 80)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := ln.Accept(ctx); !errors.Is(err, ErrListenerClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if _, err := c4.Read(buf); !errors.Is(err, ErrReset) {
		t.Fatalf("read on a connection reset by listener close: %v", err)
	}
	// Established connections live on after the listener closed.
	if _, err := s.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	if n, err := conns[0].Read(buf); err != nil || string(buf[:n]) != "still here" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if _, err := m1.Dial(ctx, 2, 80); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial after listener close: %v", err)
	}
	for _, c := range append(conns, c3, c4, s, s2) {
		c.Close()
	}
}

func TestLimitsAndPolicy(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	m1 := h.manager(1, func(c *Config) {
		c.MaxConns = 3
		c.Allow = func(peer vchan.DomID, port uint32) bool { return port != 666 }
	})
	m2 := h.manager(2)
	m1.Listen(666, 0)
	ln, _ := m1.Listen(1, 0)
	ctx := testCtx(t, 10*time.Second)
	if _, err := m2.Dial(ctx, 1, 666); !errors.Is(err, ErrDenied) || !containsStr(err.Error(), "denied") {
		t.Fatalf("dial to a port policy forbids: %v", err)
	}
	var conns []*Conn
	for range 3 {
		c, err := m2.Dial(ctx, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if _, err := m2.Dial(ctx, 1, 1); !errors.Is(err, ErrDenied) || !containsStr(err.Error(), "too many") {
		t.Fatalf("dial beyond MaxConns: %v", err)
	}
	// Closing one makes room again.
	conns[0].Reset()
	waitFor(t, "room on the link", func() bool {
		c, err := m2.Dial(ctx, 1, 1)
		if err != nil {
			return false
		}
		conns[0] = c
		return true
	})
	for _, c := range conns {
		c.Close()
	}
	for {
		s, err := ln.TryAccept()
		if err != nil {
			break
		}
		s.Close()
	}
}

// TestSetupAddsDomainWhileRunning: `idcfs setup` run again with one more
// domain while daemons run lets the new domain link both ways, though the
// running daemons announced themselves before it was listed.
func TestSetupAddsDomainWhileRunning(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2}, 3)
	m1 := h.manager(1)
	ln1, err := m1.Listen(80, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 20*time.Second)
	if err := Setup(ctx, h.dom0, []vchan.DomID{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	m3 := h.manager(3)
	ln3, err := m3.Listen(81, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		from *Manager
		to   vchan.DomID
		ln   *Listener
	}{
		{"new domain to a running one", m3, 1, ln1},
		{"running domain to the new one", m1, 3, ln3},
	} {
		c, err := tc.from.Dial(ctx, tc.to, tc.ln.Port())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		s, err := tc.ln.Accept(ctx)
		if err != nil {
			t.Fatalf("%s: accept: %v", tc.name, err)
		}
		c.Close()
		s.Close()
	}
}
