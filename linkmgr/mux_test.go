package linkmgr

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"idcfs/vchan"
)

// pattern returns n bytes that depend on seed, so a byte delivered to the
// wrong connection or out of order is noticed.
func pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// echoServer accepts until the listener closes and echoes every
// connection back until EOF, then closes it.
func echoServer(t testing.TB, ln *Listener, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := io.Copy(c, c); err != nil {
					t.Errorf("echo conn %d: %v", c.ID(), err)
				}
			}()
		}
	}()
}

func TestThousandConnections(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	// All 1000 dials start at once and wait their turn for one of
	// MaxPending connect slots while the connections already up echo
	// their data. On a loaded machine (the race detector, every package's
	// tests in parallel on two CPUs) the last dials need more than the
	// default 5s: the time goes to queueing for a slot and to waiting for
	// a CPU after the reply woke the dialer, not to lost replies. Every
	// dial must still succeed and every echo come back intact.
	budget := func(c *Config) { c.ConnectTimeout = 60 * time.Second }
	m1 := h.manager(1, budget)
	m2 := h.manager(2, budget)
	ln, err := m2.Listen(7, 1024)
	if err != nil {
		t.Fatal(err)
	}
	var srv sync.WaitGroup
	echoServer(t, ln, &srv)
	const conns = 1000
	size := 20000
	if testing.Short() {
		size = 2000
	}
	ctx := testCtx(t, 120*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	start := make(chan struct{})
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c, err := m1.Dial(ctx, 2, 7)
			if err != nil {
				errs <- fmt.Errorf("dial %d: %w", i, err)
				return
			}
			defer c.Close()
			want := pattern(uint64(i), size+i)
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(want)
				if err == nil {
					err = c.CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- fmt.Errorf("conn %d read: %w", i, err)
				return
			}
			if err := <-werr; err != nil {
				errs <- fmt.Errorf("conn %d write: %w", i, err)
				return
			}
			if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("conn %d: got %d bytes, want %d (or different bytes)", i, len(got), len(want))
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if links := m1.Links(); len(links) != 1 || links[0].Peer != 2 {
		t.Errorf("links of dom 1: %+v, want exactly one to dom 2", links)
	}
	ln.Close()
	srv.Wait()
}

func TestHalfClose(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	m1 := h.manager(1)
	m2 := h.manager(2)
	ln, _ := m2.Listen(1, 0)
	ctx := testCtx(t, 10*time.Second)
	for _, first := range []string{"dialer", "acceptor"} {
		t.Run(first+" shuts first", func(t *testing.T) {
			c, err := m1.Dial(ctx, 2, 1)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ln.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			a, b := c, s
			if first == "acceptor" {
				a, b = s, c
			}
			// a sends and shuts its write side; b still sends afterwards.
			a.Write([]byte("from a"))
			if err := a.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Write([]byte("x")); !errors.Is(err, netErrClosed) {
				t.Fatalf("write after CloseWrite: %v", err)
			}
			got, err := io.ReadAll(b)
			if err != nil || string(got) != "from a" {
				t.Fatalf("b read %q, %v", got, err)
			}
			if _, err := b.Write([]byte("from b")); err != nil {
				t.Fatal(err)
			}
			b.CloseWrite()
			got, err = io.ReadAll(a)
			if err != nil || string(got) != "from b" {
				t.Fatalf("a read %q, %v", got, err)
			}
			a.Close()
			b.Close()
			waitFor(t, "connections freed", func() bool { return len(m1.Conns()) == 0 && len(m2.Conns()) == 0 })
		})
	}
	t.Run("close stops peer writes", func(t *testing.T) {
		c, _ := m1.Dial(ctx, 2, 1)
		s, _ := ln.Accept(ctx)
		s.Close()
		waitFor(t, "peer closed", func() bool {
			_, err := c.Write([]byte("x"))
			return errors.Is(err, ErrPeerClosed)
		})
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read after peer Close: %v", err)
		}
		c.Close()
	})
	t.Run("reset", func(t *testing.T) {
		c, _ := m1.Dial(ctx, 2, 1)
		s, _ := ln.Accept(ctx)
		s.Reset()
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
			t.Fatalf("read after peer Reset: %v", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, ErrReset) {
			t.Fatalf("write after peer Reset: %v", err)
		}
		if _, err := s.Read(make([]byte, 1)); !errors.Is(err, netErrClosed) {
			t.Fatalf("read after own Reset: %v", err)
		}
		c.Close()
	})
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStalledReader measures one connection's throughput while another
// connection on the same link has a reader that never reads, against the
// same transfer alone. A stalled reader only fills its own window.
func TestStalledReader(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	m1 := h.manager(1)
	m2 := h.manager(2)
	ln, _ := m2.Listen(1, 0)
	ctx := testCtx(t, 30*time.Second)
	const total = 32 << 20
	transfer := func() time.Duration {
		c, err := m1.Dial(ctx, 2, 1)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256<<10)
		start := time.Now()
		go func() {
			for sent := 0; sent < total; sent += len(buf) {
				if _, err := c.Write(buf); err != nil {
					t.Error(err)
					return
				}
			}
			c.CloseWrite()
		}()
		n, err := io.CopyBuffer(io.Discard, s, make([]byte, 256<<10))
		d := time.Since(start)
		if err != nil || n != total {
			t.Fatalf("received %d, %v", n, err)
		}
		c.Close()
		s.Close()
		return d
	}
	// Best of two runs each, so that warm-up and load from elsewhere on the
	// machine do not decide the ratio.
	best := func() time.Duration { return min(transfer(), transfer()) }
	alone := best()

	// The stalled connection: its writer fills the window and blocks.
	sc, err := m1.Dial(ctx, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stalledWrote := make(chan int64, 1)
	go func() {
		var n int64
		buf := make([]byte, 64<<10)
		for {
			k, err := sc.Write(buf)
			n += int64(k)
			if err != nil {
				stalledWrote <- n
				return
			}
		}
	}()
	waitFor(t, "stalled window full", func() bool {
		return ss.Info().Buffered >= DefaultWindow
	})
	withStall := best()
	ratio := float64(alone) / float64(withStall)
	t.Logf("stalled reader: %d MiB alone in %v, next to a stalled connection in %v: throughput ratio %.2f", total>>20, alone, withStall, ratio)
	if ratio < 0.05 {
		t.Errorf("throughput next to a stalled reader is %.3f of the throughput alone", ratio)
	}
	if p := ss.Info().Buffered; p > DefaultWindow {
		t.Errorf("stalled connection buffered %d bytes, more than its window %d", p, DefaultWindow)
	}
	sc.Reset()
	if n := <-stalledWrote; n != DefaultWindow {
		t.Errorf("stalled writer put %d bytes on the ring, want exactly the window %d", n, DefaultWindow)
	}
	ss.Close()
}

// TestFairShare: connections of one link that all have data to send share
// the ring: while three writers keep writing, no connection gets less
// than half of what the fastest one got.
func TestFairShare(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	m1 := h.manager(1)
	m2 := h.manager(2)
	ln, _ := m2.Listen(1, 0)
	ctx := testCtx(t, 30*time.Second)
	const conns = 3
	var got [conns]atomic.Int64
	var wg sync.WaitGroup
	var cs, ss []*Conn
	for range conns {
		c, err := m1.Dial(ctx, 2, 1)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cs, ss = append(cs, c), append(ss, s)
	}
	for i := range conns {
		wg.Add(2)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				if _, err := cs[i].Write(buf); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for {
				n, err := ss[i].Read(buf)
				got[i].Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	// Measured from the moment every connection got data (all writers
	// run), over half a second: each writer is queued behind the others
	// thousands of times, and the Go scheduler's time slices (which decide
	// whose writer runs at all on a busy machine) even out.
	waitFor(t, "data on every connection", func() bool {
		for i := range got {
			if got[i].Load() == 0 {
				return false
			}
		}
		return true
	})
	var base [conns]int64
	for i := range got {
		base[i] = got[i].Load()
	}
	time.Sleep(500 * time.Millisecond)
	var shares [conns]int64
	for i := range got {
		shares[i] = got[i].Load() - base[i]
	}
	for i := range cs {
		cs[i].Reset()
		ss[i].Close()
	}
	wg.Wait()
	lo, hi := slices.Min(shares[:]), slices.Max(shares[:])
	t.Logf("bytes received per connection: %v", shares)
	if lo < hi/2 {
		t.Errorf("unfair: bytes received per connection %v (least under half of most)", shares)
	}
}
