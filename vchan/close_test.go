package vchan_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"runtime"
	"testing"
	"time"

	"idcfs/vchan"
	"idcfs/vchan/heap"
)

// TestPeerGone: the closing (or dying) side writes some data and goes away;
// the survivor reads that data, then io.EOF, and cannot write.
func TestPeerGone(t *testing.T) {
	for _, tt := range []struct {
		name    string
		closer  string // "client" or "server"
		howDies string // "close" or "kill"
	}{
		{"client closes", "client", "close"},
		{"server closes", "server", "close"},
		{"client dies", "client", "kill"},
		{"server dies", "server", "kill"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, srv, cli := pair(t, 4096, 2048)
			// Events only: a lost close event would hang until the context.
			srv.SetRecheckForTest(time.Hour)
			cli.SetRecheckForTest(time.Hour)
			ctx := testCtx(t, 10*time.Second)
			if err := srv.WaitConnected(ctx); err != nil {
				t.Fatal(err)
			}
			gone, survivor, dom := cli, srv, cliDom
			if tt.closer == "server" {
				gone, survivor, dom = srv, cli, srvDom
			}
			tail := make([]byte, 1500)
			fill(tail, 0)
			if _, err := gone.WriteContext(ctx, tail); err != nil {
				t.Fatal(err)
			}
			// The survivor is blocked in a read of the other direction
			// when the peer goes: it must wake up.
			blocked := make(chan error, 1)
			go func() {
				_, err := survivor.WriteContext(ctx, make([]byte, 64<<10)) // more than the ring holds
				blocked <- err
			}()
			if tt.howDies == "close" {
				if err := gone.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
			} else {
				h.Kill(dom)
			}
			if err := <-blocked; !errors.Is(err, vchan.ErrPeerClosed) {
				t.Fatalf("blocked write after peer went: %v", err)
			}
			select {
			case <-survivor.Done():
			case <-ctx.Done():
				t.Fatal("Done not closed")
			}
			if err := survivor.Err(); !errors.Is(err, vchan.ErrPeerClosed) {
				t.Fatalf("Err = %v", err)
			}
			if err := readN(ctx, survivor, len(tail), 0); err != nil {
				t.Fatalf("remaining data: %v", err)
			}
			buf := make([]byte, 10)
			if n, err := survivor.ReadContext(ctx, buf); n != 0 || err != io.EOF {
				t.Fatalf("read after the data = %d, %v; want io.EOF", n, err)
			}
			if _, err := survivor.Write([]byte("x")); !errors.Is(err, vchan.ErrPeerClosed) {
				t.Fatalf("write = %v", err)
			}
			if err := survivor.Close(); err != nil {
				t.Fatalf("survivor Close: %v", err)
			}
			if _, err := survivor.Read(buf); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read after own Close = %v", err)
			}
		})
	}
}

// TestCloseWakesBlocked: Close of an endpoint releases its own blocked Read
// and Write with net.ErrClosed.
func TestCloseWakesBlocked(t *testing.T) {
	_, srv, _ := pair(t, 0, 0)
	srv.SetRecheckForTest(time.Hour)
	ctx := testCtx(t, 10*time.Second)
	rd, wr := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := srv.ReadContext(ctx, make([]byte, 10))
		rd <- err
	}()
	go func() {
		_, err := srv.WriteContext(ctx, make([]byte, 10000)) // 2 KiB ring, no reader
		wr <- err
	}()
	waitFlag(t, srv.PageForTest(), 2, 3) // both requests made: both are blocked
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []chan error{rd, wr} {
		if err := <-c; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked call after Close: %v", err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !errors.Is(srv.Err(), net.ErrClosed) {
		t.Fatalf("Err = %v", srv.Err())
	}
}

func TestWaitConnected(t *testing.T) {
	h := heap.New()
	srv := server(t, h, 0, 0)
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := srv.WaitConnected(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConnected without client = %v", err)
	}
	srv.SetRecheckForTest(time.Hour) // the connect event must wake it
	done := make(chan error, 1)
	go func() { done <- srv.WaitConnected(testCtx(t, 10*time.Second)) }()
	time.Sleep(10 * time.Millisecond)
	cli := client(t, h, srv)
	if err := <-done; err != nil {
		t.Fatalf("WaitConnected = %v", err)
	}
	if err := cli.WaitConnected(context.Background()); err != nil {
		t.Fatalf("client WaitConnected = %v", err)
	}
}

// TestServerWritesBeforeClient: a server may write before the client
// connects (cli_live 2 counts as open); the client reads it later.
func TestServerWritesBeforeClient(t *testing.T) {
	h := heap.New()
	srv := server(t, h, 0, 0)
	if n, err := srv.Write([]byte("early")); n != 5 || err != nil {
		t.Fatalf("write before connect: %d, %v", n, err)
	}
	cli := client(t, h, srv)
	buf := make([]byte, 8)
	if n, err := cli.ReadContext(testCtx(t, 5*time.Second), buf); string(buf[:n]) != "early" || err != nil {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}
}

func TestListenDial(t *testing.T) {
	h, st := heap.New(), heap.NewStore()
	ctx := testCtx(t, 10*time.Second)
	const path = "/local/domain/0/data/vchan/5/1234"
	if _, err := vchan.Dial(ctx, h.Domain(cliDom), st, srvDom, path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Dial before Listen = %v", err)
	}
	srv, err := vchan.Listen(ctx, h.Domain(srvDom), st, cliDom, path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ref, port, err := st.Lookup(ctx, path)
	if err != nil || ref != srv.RingRef() || port != srv.Port() {
		t.Fatalf("published %d/%d, %v; want %d/%d", ref, port, err, srv.RingRef(), srv.Port())
	}
	cli, err := vchan.Dial(ctx, h.Domain(cliDom), st, srvDom, path)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cli.Write([]byte("hi"))
	buf := make([]byte, 4)
	if n, err := srv.ReadContext(ctx, buf); string(buf[:n]) != "hi" || err != nil {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Lookup(ctx, path); !errors.Is(err, heap.ErrNotFound) {
		t.Fatalf("path still published after Close: %v", err)
	}
}

// TestNoGoroutineLeak: Close waits for the endpoint's goroutine.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	h := heap.New()
	for range 10 {
		srv, err := vchan.NewServer(h.Domain(srvDom), cliDom, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		cli, err := vchan.NewClient(h.Domain(cliDom), srvDom, srv.RingRef(), srv.Port())
		if err != nil {
			t.Fatal(err)
		}
		cli.Close()
		srv.Close()
	}
	// Timers of earlier tests may still be running their functions: give
	// unrelated goroutines a moment, then show what is left.
	after := runtime.NumGoroutine()
	for deadline := time.Now().Add(2 * time.Second); after > before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		after = runtime.NumGoroutine()
	}
	if after > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines before, %d after closing every endpoint:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

// TestLoopback: server and client in the same domain (an in-process
// loopback link).
func TestLoopback(t *testing.T) {
	h := heap.New()
	d := h.Domain(srvDom)
	srv, err := vchan.NewServer(d, srvDom, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := vchan.NewClient(d, srvDom, srv.RingRef(), srv.Port())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := transfer(testCtx(t, 10*time.Second), cli, srv, 10000, []int{999}, []int{512}); err != nil {
		t.Fatal(err)
	}
}

// TestWaitConnectedClose: Close releases a server waiting for its client.
func TestWaitConnectedClose(t *testing.T) {
	srv := server(t, heap.New(), 0, 0)
	srv.SetRecheckForTest(time.Hour)
	done := make(chan error, 1)
	go func() { done <- srv.WaitConnected(testCtx(t, 10*time.Second)) }()
	time.Sleep(10 * time.Millisecond)
	srv.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WaitConnected across Close = %v", err)
	}
}
