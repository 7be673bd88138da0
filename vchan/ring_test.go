package vchan_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"idcfs/vchan"
	"idcfs/vchan/heap"
)

// sizesFor returns NewServer arguments that give the left (client->server)
// or right (server->client) ring the given order.
func sizesFor(order int, left bool) (leftMin, rightMin int) {
	switch {
	case order == 10 && left, order == 11 && !left:
		return 1024, 2048
	case order == 10, order == 11:
		return 2048, 1024
	}
	return 1 << order, 1 << order
}

func TestWraparoundAllOrders(t *testing.T) {
	for order := 10; order <= 20; order++ {
		for _, dir := range []string{"client-to-server", "server-to-client"} {
			t.Run(dir+"/order="+itoa(order), func(t *testing.T) {
				left := dir == "client-to-server"
				lm, rm := sizesFor(order, left)
				_, srv, cli := pair(t, lm, rm)
				w, r := cli, srv
				if !left {
					w, r = srv, cli
				}
				size := 1 << order
				if got := w.Stats().WriteRing; got != size {
					t.Fatalf("write ring = %d bytes, want %d", got, size)
				}
				if got := r.Stats().ReadRing; got != size {
					t.Fatalf("read ring = %d bytes, want %d", got, size)
				}
				total := 2*size + 777 // wraps twice, ends mid-ring
				wsz := []int{1, size/3 + 1, 4093, size, 7, 2 * size}
				rsz := []int{size, 5, size/2 + 3, 1, 2*size + 1}
				if err := transfer(testCtx(t, 20*time.Second), w, r, total, wsz, rsz); err != nil {
					t.Fatal(err)
				}
				if s := r.Stats(); s.BytesIn != uint64(total) {
					t.Fatalf("reader BytesIn = %d, want %d", s.BytesIn, total)
				}
				if s := w.Stats(); s.BytesOut != uint64(total) {
					t.Fatalf("writer BytesOut = %d, want %d", s.BytesOut, total)
				}
			})
		}
	}
}

func itoa(n int) string { return string(rune('0'+n/10)) + string(rune('0'+n%10)) }

func TestPartialReadAndWrite(t *testing.T) {
	_, srv, cli := pair(t, 1024, 2048) // client writes into a 1 KiB ring
	ctx := testCtx(t, 10*time.Second)
	src := make([]byte, 3000)
	fill(src, 0)
	// No reader yet: only one ring's worth goes in before the deadline.
	cli.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := cli.Write(src)
	if n != 1024 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write into 1 KiB ring without reader = %d, %v; want 1024, deadline", n, err)
	}
	cli.SetWriteDeadline(time.Time{})
	// Small reads take the front of the data.
	buf := make([]byte, 10)
	m, err := srv.ReadContext(ctx, buf)
	if m != 10 || err != nil || check(buf, 0) != nil {
		t.Fatalf("partial read = %d, %v, %v", m, err, check(buf[:m], 0))
	}
	// The rest of src goes in while the server drains.
	done := make(chan error, 1)
	go func() {
		_, err := cli.WriteContext(ctx, src[n:])
		done <- err
	}()
	got := make([]byte, 0, 3000)
	got = append(got, buf...)
	big := make([]byte, 700)
	for len(got) < len(src) {
		m, err := srv.ReadContext(ctx, big)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got = append(got, big[:m]...)
	}
	if err := <-done; err != nil {
		t.Fatalf("blocked write: %v", err)
	}
	if err := check(got, 0); err != nil {
		t.Fatal(err)
	}
}

func TestFullRingIsReadable(t *testing.T) {
	_, srv, cli := pair(t, 4096, 4096)
	ctx := testCtx(t, 10*time.Second)
	src := make([]byte, 4096)
	fill(src, 0)
	if n, err := cli.WriteContext(ctx, src); n != 4096 || err != nil {
		t.Fatalf("filling the ring: %d, %v", n, err)
	}
	page := cli.PageForTest()
	prod, cons := vchan.Word(page, vchan.OffLeftProd), vchan.Word(page, vchan.OffLeftCons)
	if prod-cons != 4096 {
		t.Fatalf("prod-cons = %d, want 4096 (full)", prod-cons)
	}
	cli.SetWriteDeadline(time.Now().Add(30 * time.Millisecond))
	if n, err := cli.Write([]byte{1}); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write into a full ring = %d, %v", n, err)
	}
	buf := make([]byte, 8192)
	n, err := srv.ReadContext(ctx, buf)
	if n != 4096 || err != nil {
		t.Fatalf("reading a full ring = %d, %v; want 4096", n, err)
	}
	if err := check(buf[:n], 0); err != nil {
		t.Fatal(err)
	}
}

// TestCounterWrap starts the free-running indices just below 2^32, which a
// server may do before a client connects (the client starts from what it
// finds).
func TestCounterWrap(t *testing.T) {
	for _, sizes := range [][2]int{{0, 0}, {4096, 8192}} {
		t.Run(itoa(sizes[0]/1024)+"K", func(t *testing.T) {
			h := heap.New()
			srv := server(t, h, sizes[0], sizes[1])
			const left, right = 0xFFFFFFF0, 0xFFFFFF00
			srv.SetIndicesForTest(left, right)
			cli := client(t, h, srv)
			if rd, wr := cli.ShadowsForTest(); rd != right || wr != left {
				t.Fatalf("client shadows = %#x, %#x; want %#x, %#x", rd, wr, uint32(right), uint32(left))
			}
			ctx := testCtx(t, 15*time.Second)
			total := 3*cli.Stats().WriteRing + 11
			errc := make(chan error, 1)
			go func() { errc <- transfer(ctx, srv, cli, total, []int{333}, []int{1000}) }()
			if err := transfer(ctx, cli, srv, total, []int{100, 3000}, []int{17, 4096}); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			page := srv.PageForTest()
			wantL, wantR := uint32(left)+uint32(total), uint32(right)+uint32(total)
			for _, c := range []struct {
				off  int
				want uint32
			}{{vchan.OffLeftProd, wantL}, {vchan.OffLeftCons, wantL}, {vchan.OffRightProd, wantR}, {vchan.OffRightCons, wantR}} {
				if got := vchan.Word(page, c.off); got != c.want {
					t.Errorf("word at %d = %#x, want %#x", c.off, got, c.want)
				}
			}
			if wantL > left {
				t.Fatal("test did not wrap the counter")
			}
		})
	}
}

// waitFlag polls the control page until the byte at off has bit set: the
// other side has gone to sleep asking for an event.
func waitFlag(t *testing.T, page []byte, byteNo int, bit uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for vchan.Word(page, vchan.OffFlags)>>(8*byteNo)&bit == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("notify bit %d in byte %d never set", bit, byteNo)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNotifyOnlyWhenAsked(t *testing.T) {
	_, srv, cli := pair(t, 0, 0)
	ctx := testCtx(t, 10*time.Second)
	page := srv.PageForTest()
	if err := srv.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	// The server's init asked for WRITE: the client's first write signals.
	cli.Write([]byte("a"))
	if got := cli.Stats().Notifies; got != 1 {
		t.Fatalf("client notifies after first write = %d, want 1", got)
	}
	// Nobody asked again: no event.
	cli.Write([]byte("b"))
	if got := cli.Stats().Notifies; got != 1 {
		t.Fatalf("client notifies after unrequested write = %d, want 1", got)
	}
	buf := make([]byte, 8)
	if n, _ := srv.ReadContext(ctx, buf); n != 2 {
		t.Fatalf("server read %d bytes, want 2", n)
	}
	// The client never asked for READ.
	if got := srv.Stats().Notifies; got != 0 {
		t.Fatalf("server notifies after read = %d, want 0", got)
	}
	// The client asked for WRITE at connect: one event, then none.
	srv.Write([]byte("x"))
	srv.Write([]byte("y"))
	if got := srv.Stats().Notifies; got != 1 {
		t.Fatalf("server notifies after two writes = %d, want 1", got)
	}
	// A server blocked in Read asks for WRITE; the next write signals.
	rd := make(chan error, 1)
	go func() {
		_, err := srv.ReadContext(ctx, buf)
		rd <- err
	}()
	waitFlag(t, page, 2, 1) // cli_notify WRITE
	if got := srv.Stats().Requests; got == 0 {
		t.Fatal("blocked server read made no request")
	}
	cli.Write([]byte("c"))
	if err := <-rd; err != nil {
		t.Fatal(err)
	}
	if got := cli.Stats().Notifies; got != 2 {
		t.Fatalf("client notifies after requested write = %d, want 2", got)
	}
}

func TestWriteBuffersOneUpdate(t *testing.T) {
	_, srv, cli := pair(t, 0, 0)
	ctx := testCtx(t, 10*time.Second)
	src := make([]byte, 600)
	fill(src, 0)
	before := cli.Stats()
	n, err := cli.WriteBuffers(ctx, src[:100], src[100:101], nil, src[101:600])
	if n != 600 || err != nil {
		t.Fatalf("WriteBuffers = %d, %v", n, err)
	}
	after := cli.Stats()
	if d := after.EventsOut - before.EventsOut; d > 1 {
		t.Fatalf("WriteBuffers sent %d events, want at most 1", d)
	}
	if d := after.BytesOut - before.BytesOut; d != 600 {
		t.Fatalf("BytesOut grew by %d", d)
	}
	buf := make([]byte, 1024)
	m, err := srv.ReadContext(ctx, buf)
	if m != 600 || err != nil || check(buf[:m], 0) != nil {
		t.Fatalf("read back %d, %v", m, err)
	}
	// More than fits: split across index updates, still all delivered.
	errc := make(chan error, 1)
	go func() { errc <- readN(ctx, srv, 3000, 600) }()
	big := make([]byte, 3000)
	fill(big, 600)
	if n, err := cli.WriteBuffers(ctx, big[:1500], big[1500:]); n != 3000 || err != nil {
		t.Fatalf("large WriteBuffers = %d, %v", n, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func readN(ctx context.Context, r *vchan.Endpoint, n int, pos uint64) error {
	buf := make([]byte, n)
	got := 0
	for got < n {
		m, err := r.ReadContext(ctx, buf[got:])
		if err != nil {
			return err
		}
		got += m
	}
	return check(buf, pos)
}

// TestNoLostWakeup runs many small ping-pongs and a bulk stream through tiny
// rings with the periodic re-check switched off: a single lost event hangs
// a side until the test's context expires and fails it.
func TestNoLostWakeup(t *testing.T) {
	_, srv, cli := pair(t, 0, 0)
	for _, e := range []*vchan.Endpoint{srv, cli} {
		e.SetRecheckForTest(time.Hour)
	}
	ctx := testCtx(t, 18*time.Second)
	const rounds = 3000
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	echo := func() { // server: echo every message back
		defer wg.Done()
		buf := make([]byte, 64)
		for range rounds {
			n, err := srv.ReadContext(ctx, buf)
			if err != nil {
				errs <- err
				return
			}
			if _, err := srv.WriteContext(ctx, buf[:n]); err != nil {
				errs <- err
				return
			}
		}
	}
	wg.Add(1)
	go echo()
	buf := make([]byte, 64)
	for i := range rounds {
		msg := buf[:1]
		msg[0] = byte(i)
		if _, err := cli.WriteContext(ctx, msg); err != nil {
			t.Fatalf("round %d write: %v", i, err)
		}
		n, err := cli.ReadContext(ctx, buf[32:])
		if err != nil || n != 1 || buf[32] != byte(i) {
			t.Fatalf("round %d: echo %d bytes %v, err %v", i, n, buf[32:32+n], err)
		}
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	// Bulk both ways at once through the 1 KiB and 2 KiB rings.
	errc := make(chan error, 1)
	go func() { errc <- transfer(ctx, srv, cli, 1<<20, []int{3000, 1, 2049}, []int{100, 2048}) }()
	if err := transfer(ctx, cli, srv, 1<<20, []int{5000, 3}, []int{1, 1023, 4096}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestDeadlines(t *testing.T) {
	_, srv, cli := pair(t, 0, 0)
	buf := make([]byte, 8)
	srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := srv.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	srv.SetDeadline(time.Time{})
	cli.Write([]byte("ok"))
	if n, err := srv.Read(buf); n != 2 || err != nil {
		t.Fatalf("read after clearing the deadline: %d, %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	if _, err := srv.ReadContext(ctx, buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
}

// TestDrainedReaderSignalsOnce checks the one unasked event: a reader that
// consumed without being asked to signal sends one event when it goes to
// wait on the drained ring, and none on the next wait; with SetDrainEvent
// (false) it sends none at all.
func TestDrainedReaderSignalsOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		on    bool
		first uint64 // events sent by the first wait
	}{
		{"default", true, 1},
		{"off", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, srv, cli := pair(t, 0, 0)
			ctx := testCtx(t, 10*time.Second)
			if err := srv.WaitConnected(ctx); err != nil {
				t.Fatal(err)
			}
			if !tc.on {
				srv.SetDrainEvent(false)
			}
			cli.Write([]byte("ab"))
			buf := make([]byte, 8)
			if n, _ := srv.ReadContext(ctx, buf); n != 2 {
				t.Fatalf("server read %d bytes, want 2", n)
			}
			before := srv.Stats()
			wait := func() {
				t.Helper()
				sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
				if _, err := srv.ReadContext(sctx, buf); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("read of a drained ring = %v, want a deadline", err)
				}
			}
			wait()
			mid := srv.Stats()
			if d := mid.EventsOut - before.EventsOut; d != tc.first {
				t.Fatalf("events when the drained reader waited = %d, want %d", d, tc.first)
			}
			if mid.Notifies != before.Notifies {
				t.Fatalf("the unasked event counted as a requested one")
			}
			wait()
			if d := srv.Stats().EventsOut - mid.EventsOut; d != 0 {
				t.Fatalf("events on a second wait with nothing consumed = %d, want 0", d)
			}
			// Asked-for events still go out: a writer blocked on a full
			// ring is woken by the read that makes room.
			big := make([]byte, srv.Stats().ReadRing+1)
			done := make(chan error, 1)
			go func() { _, err := cli.WriteContext(ctx, big); done <- err }()
			for got := 0; got < len(big); {
				n, err := srv.ReadContext(ctx, make([]byte, 4096))
				if err != nil {
					t.Fatal(err)
				}
				got += n
			}
			if err := <-done; err != nil {
				t.Fatalf("writer of a full ring: %v", err)
			}
		})
	}
}

// TestDrainedReaderAfterWriteSendsNothing: when the reader has sent the
// peer an event since it consumed (here its own write's, which the client
// asked for at connect), draining and waiting adds no unasked event, so a
// request/response exchange pays nothing for the drained-reader signal.
func TestDrainedReaderAfterWriteSendsNothing(t *testing.T) {
	_, srv, cli := pair(t, 0, 0)
	ctx := testCtx(t, 10*time.Second)
	if err := srv.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, _ := srv.ReadContext(ctx, buf); n != 2 {
		t.Fatalf("server read %d bytes, want 2", n)
	}
	before := srv.Stats()
	if _, err := srv.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	afterWrite := srv.Stats()
	if d := afterWrite.EventsOut - before.EventsOut; d != 1 {
		t.Fatalf("events for the reply = %d, want 1 (the client asked at connect)", d)
	}
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := srv.ReadContext(sctx, buf); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read of a drained ring = %v, want a deadline", err)
	}
	if d := srv.Stats().EventsOut - afterWrite.EventsOut; d != 0 {
		t.Fatalf("unasked events after a write already signalled the peer = %d, want 0", d)
	}
}
