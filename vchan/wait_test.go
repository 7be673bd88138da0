package vchan_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"idcfs/vchan"
)

// echo answers every byte cli sends to srv until ctx is done.
func echo(ctx context.Context, srv *vchan.Endpoint) <-chan error {
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := srv.ReadContext(ctx, buf)
			if err != nil {
				errc <- err
				return
			}
			if _, err := srv.WriteContext(ctx, buf[:n]); err != nil {
				errc <- err
				return
			}
		}
	}()
	return errc
}

// TestRoundTripAllocs: a blocking round trip allocates nothing, with a
// context that cannot be cancelled, with one long-lived context that can
// (the blocked Read waits on the event channel itself, registered on its
// context once) and with Reads alternating between two such contexts.
func TestRoundTripAllocs(t *testing.T) {
	for _, tt := range []struct {
		name string
		ctx  func(t *testing.T) context.Context
		alt  bool
	}{
		{"background", func(*testing.T) context.Context { return context.Background() }, false},
		{"cancellable", func(t *testing.T) context.Context { return testCtx(t, time.Minute) }, false},
		{"two contexts", func(t *testing.T) context.Context { return testCtx(t, time.Minute) }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, srv, cli := pair(t, 0, 0)
			for _, e := range []*vchan.Endpoint{srv, cli} {
				e.SetRecheckForTest(time.Hour) // no periodic re-arming
			}
			ctx, other := tt.ctx(t), tt.ctx(t)
			if !tt.alt {
				other = ctx
			}
			i := 0
			ectx, cancel := context.WithCancel(context.Background())
			errc := echo(ectx, srv)
			msg, buf := []byte{1}, make([]byte, 8)
			rt := func() {
				if _, err := cli.WriteContext(ctx, msg); err != nil {
					t.Fatal(err)
				}
				rctx := ctx
				if i++; i%2 == 0 {
					rctx = other
				}
				if n, err := cli.ReadContext(rctx, buf); n != 1 || err != nil {
					t.Fatalf("echo: %d, %v", n, err)
				}
			}
			for range 100 { // the first waits register the contexts
				rt()
			}
			if a := testing.AllocsPerRun(500, rt); a != 0 {
				t.Errorf("%v allocations per round trip, want 0", a)
			}
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("echo: %v", err)
			}
		})
	}
}

// TestDoneWhileIdle: with the periodic re-check off, Done closes promptly
// when the peer closes right after a burst of round trips (while the
// watcher stays off the event channel) and after a long idle spell (while
// the watcher waits on it).
func TestDoneWhileIdle(t *testing.T) {
	for _, pause := range []time.Duration{0, 100 * time.Millisecond} {
		t.Run(pause.String(), func(t *testing.T) {
			_, srv, cli := pair(t, 0, 0)
			for _, e := range []*vchan.Endpoint{srv, cli} {
				e.SetRecheckForTest(time.Hour)
			}
			ctx, cancel := context.WithCancel(testCtx(t, 10*time.Second))
			errc := echo(ctx, srv)
			buf := make([]byte, 8)
			for range 200 {
				if _, err := cli.WriteContext(ctx, []byte{7}); err != nil {
					t.Fatal(err)
				}
				if _, err := cli.ReadContext(ctx, buf); err != nil {
					t.Fatal(err)
				}
			}
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("echo: %v", err)
			}
			time.Sleep(pause)
			start := time.Now()
			srv.Close()
			select {
			case <-cli.Done():
			case <-time.After(2 * time.Second):
				t.Fatal("Done not closed 2s after the peer closed")
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("Done closed %v after the peer closed", d)
			}
			if !errors.Is(cli.Err(), vchan.ErrPeerClosed) {
				t.Fatalf("Err = %v", cli.Err())
			}
		})
	}
}

// TestBothBlocked: a Read and a Write of one endpoint block at the same
// time, over and over (only one of them waits on the event channel, the
// other is woken by it); with the periodic re-check off a lost wake-up
// hangs the test. Deadlines and cancellation end either while the other
// stays blocked.
func TestBothBlocked(t *testing.T) {
	_, srv, cli := pair(t, 0, 0)
	for _, e := range []*vchan.Endpoint{srv, cli} {
		e.SetRecheckForTest(time.Hour)
	}
	ctx := testCtx(t, 20*time.Second)
	// srv reads and writes in lock step with cli's slow writer and
	// reader, so both of srv's calls are blocked most of the time.
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errc <- transfer(ctx, srv, cli, 200000, []int{4096}, []int{100})
	}()
	go func() {
		defer wg.Done()
		errc <- transfer(ctx, cli, srv, 200000, []int{100}, []int{4096})
	}()
	wg.Wait()
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}

	// Now srv's Write is blocked (full ring, nobody reads) while its Read
	// times out, then its Read is blocked while the Write is cancelled.
	wctx, wcancel := context.WithCancel(ctx)
	werr := make(chan error, 1)
	go func() {
		_, err := srv.WriteContext(wctx, make([]byte, 8192))
		werr <- err
	}()
	waitFlag(t, srv.PageForTest(), 2, 2) // the writer asked cli to signal
	srv.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := srv.ReadContext(ctx, make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	srv.SetReadDeadline(time.Time{})
	rerr := make(chan error, 1)
	go func() {
		_, err := srv.ReadContext(ctx, make([]byte, 8))
		rerr <- err
	}()
	time.Sleep(20 * time.Millisecond)
	wcancel()
	if err := <-werr; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled write: %v", err)
	}
	// The Read, possibly woken without the role before, must still see
	// the next event.
	if _, err := cli.WriteContext(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := <-rerr; err != nil {
		t.Fatalf("read: %v", err)
	}
}
