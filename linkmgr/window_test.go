package linkmgr

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"idcfs/vchan"
)

func TestTuneWindow(t *testing.T) {
	const w = 64 << 10
	for _, tc := range []struct {
		name                   string
		window, max            uint32
		rxCnt, sentFwd, rw, rr int
		want                   uint32
	}{
		{"peer used it all, buffer empty", w, 4 * w, 5 * w, 4 * w, 0, 0, 2 * w},
		{"three quarters used, a quarter buffered", w, 4 * w, w * 3 / 4, 0, w / 4, 0, 2 * w},
		{"less than three quarters used", w, 4 * w, w*3/4 - 1, 0, 0, 0, w},
		{"more than a quarter buffered", w, 4 * w, w, 0, w/4 + 1, 0, w},
		{"buffered bytes partly read", w, 4 * w, w, 0, w, w - w/4, 2 * w},
		{"capped at the maximum", 3 * w, 4 * w, 3 * w, 0, 0, 0, 4 * w},
		{"at the maximum", 4 * w, 4 * w, 4 * w, 0, 0, 0, 4 * w},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Conn{window: tc.window, maxWindow: tc.max, rxCnt: uint64(tc.rxCnt), sentFwd: uint64(tc.sentFwd), rw: tc.rw, rr: tc.rr}
			c.tuneWindowLocked()
			if c.window != tc.want {
				t.Fatalf("window %d, want %d", c.window, tc.want)
			}
		})
	}
}

// TestWindowTuning: a reader that takes all that is buffered at once, so
// that the receive buffer is empty when each CREDIT becomes due, doubles its
// window after every window's worth, up to MaxWindow; one that lags, taking
// half of a full buffer in small pieces each time, so that at least half
// the window is buffered whenever a CREDIT becomes due, keeps its window.
// The data arrives intact either way, and the sender never has more in
// flight than the window it was told.
func TestWindowTuning(t *testing.T) {
	const window, maxWindow = 64 << 10, 256 << 10
	for _, tc := range []struct {
		name  string
		piece int // read size; 0: all that is buffered
		half  bool
		want  []uint32
	}{
		{"prompt", 0, false, []uint32{window, 2 * window, 4 * window, 4 * window}},
		{"lagging", 4 << 10, true, []uint32{window, window, window, window, window, window}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			h := newTestHost(t, []vchan.DomID{1, 2})
			m1 := h.manager(1, func(c *Config) { c.Window = window; c.MaxWindow = maxWindow })
			m2 := h.manager(2)
			ln, err := m1.Listen(1, 0)
			if err != nil {
				t.Fatal(err)
			}
			ctx := testCtx(t, 20*time.Second)
			c, err := m2.Dial(ctx, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := ln.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			want := pattern(7, 2<<20)
			go func() {
				c.Write(want)
				c.CloseWrite()
			}()
			var got []byte
			buf := make([]byte, maxWindow)
			for round := 0; round < len(tc.want); round++ {
				// Wait until the sender used all the credit it has: the
				// window is full.
				win := waitFull(t, ctx, s)
				if win != tc.want[round] {
					t.Fatalf("round %d: window %d, want %d", round, win, tc.want[round])
				}
				take := int(win)
				if tc.half {
					take /= 2
				}
				for taken := 0; taken < take; {
					p := buf[:take-taken]
					if tc.piece > 0 {
						p = p[:min(len(p), tc.piece)]
					}
					n, err := s.Read(p)
					if err != nil {
						t.Fatalf("round %d: read: %v", round, err)
					}
					got = append(got, p[:n]...)
					taken += n
				}
			}
			rest, err := io.ReadAll(s)
			if err != nil {
				t.Fatal(err)
			}
			if got = append(got, rest...); !bytes.Equal(got, want) {
				t.Fatalf("received %d bytes, not the %d sent", len(got), len(want))
			}
		})
	}
}

// waitFull waits until s buffers as many bytes as its window and returns the
// window. It fails the test if the buffer ever holds more than the window.
func waitFull(t *testing.T, ctx context.Context, s *Conn) uint32 {
	t.Helper()
	for {
		info := s.Info()
		if info.Buffered > int(info.Window) {
			t.Fatalf("%d bytes buffered, beyond the window of %d", info.Buffered, info.Window)
		}
		if info.Buffered == int(info.Window) {
			return info.Window
		}
		if ctx.Err() != nil {
			t.Fatalf("window of %d never filled: %d bytes buffered", info.Window, info.Buffered)
		}
		time.Sleep(time.Millisecond)
	}
}
