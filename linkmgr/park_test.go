package linkmgr

import (
	"bytes"
	"io"
	"testing"
	"time"

	"idcfs/vchan"
)

// TestParkedReader: while dom 2 sends a stream over one connection (its
// link reader parked, off the event channel), what dom 1 sends it still
// arrives: a ping-pong on a second connection, and the CREDITs of the
// stream, whose window (twice the ring) it uses up now and then. The
// ping-pong goes on until dom 2's reader has parked a number of times.
func TestParkedReader(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	dir := shmDir(t)
	small := func(c *Config) { c.Window, c.MaxWindow = 2*DefaultRingSize, 2*DefaultRingSize }
	m1 := h.manager(1, func(c *Config) { c.Backend = shmBackend(t, dir, 1); small(c) })
	m2 := h.manager(2, func(c *Config) { c.Backend = shmBackend(t, dir, 2); small(c) })
	ln, err := m1.Listen(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 60*time.Second)
	dial := func() (*Conn, *Conn) {
		c, err := m2.Dial(ctx, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		return c, s
	}
	streamC, streamS := dial()
	pingC, pingS := dial()

	want := pattern(3, 32<<20)
	stop := make(chan struct{})
	writeErr := make(chan error, 1)
	go func() {
		// Keep the stream going until the ping-pong is over, then end it.
		for off := 0; ; off = (off + 64<<10) % len(want) {
			select {
			case <-stop:
				writeErr <- streamC.CloseWrite()
				return
			default:
			}
			if _, err := streamC.Write(want[off : off+64<<10]); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	got := make(chan int64, 1)
	go func() {
		// The stream is want over and over: check every byte.
		buf := make([]byte, 256<<10)
		var n int64
		for {
			k, err := streamS.Read(buf)
			for i := 0; i < k; {
				off := int((n + int64(i)) % int64(len(want)))
				m := min(k-i, len(want)-off)
				if !bytes.Equal(buf[i:i+m], want[off:off+m]) {
					t.Errorf("stream: bytes at %d differ", n+int64(i))
					got <- -1
					return
				}
				i += m
			}
			n += int64(k)
			if err != nil {
				got <- n
				return
			}
		}
	}()

	// dom 1 pings, dom 2 echoes: every ping reaches dom 2 while it sends.
	go func() {
		var one [1]byte
		for {
			if _, err := io.ReadFull(pingC, one[:]); err != nil {
				return
			}
			if _, err := pingC.Write(one[:]); err != nil {
				return
			}
		}
	}()
	parks := func() uint64 {
		var n uint64
		for _, l := range *m2.links.Load() {
			n += l.parks.Load()
		}
		return n
	}
	pings := 0
	for ; pings < 200 || parks() < 20; pings++ {
		if ctx.Err() != nil {
			t.Fatalf("%d pings, dom 2's link reader parked %d times", pings, parks())
		}
		msg := []byte{byte(pings)}
		if _, err := pingS.Write(msg); err != nil {
			t.Fatal(err)
		}
		var back [1]byte
		if _, err := io.ReadFull(pingS, back[:]); err != nil || !bytes.Equal(back[:], msg) {
			t.Fatalf("ping %d: got %v, %v", pings, back, err)
		}
	}
	close(stop)
	if err := <-writeErr; err != nil {
		t.Fatalf("stream: %v", err)
	}
	n := <-got
	if out := streamC.Info().BytesOut; n == 0 || uint64(n) != out {
		t.Fatalf("stream: %d bytes received, %d sent", n, out)
	}
	t.Logf("%d bytes streamed, %d pings; dom 2's reader parked %d times", n, pings, parks())
}

// TestSmallWritesDoNotPark: requests and answers (frames under a quarter
// ring) leave both link readers on the event channel, where an answer that
// comes after the last write wakes them at once.
func TestSmallWritesDoNotPark(t *testing.T) {
	_, c, s := connectedPair(t)
	go func() {
		buf := make([]byte, 100)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	}()
	msg := pattern(5, 100)
	back := make([]byte, len(msg))
	for i := range 500 {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, back); err != nil || !bytes.Equal(back, msg) {
			t.Fatalf("round trip %d: %v", i, err)
		}
	}
	for _, l := range []*link{c.l, s.l} {
		if n := l.parks.Load(); n != 0 {
			t.Fatalf("a link reader parked %d times", n)
		}
	}
}
