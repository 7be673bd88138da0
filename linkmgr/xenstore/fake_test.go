package xenstore_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"idcfs/linkmgr/xenstore"
)

// fake is the server end of a pipe, scripted by the test.
type fake struct {
	t    *testing.T
	conn net.Conn
	reqs chan *xenstore.Message
}

func newFake(t *testing.T, device bool) (*xenstore.Client, *fake) {
	t.Helper()
	checkLeaks(t)
	a, b := net.Pipe()
	f := &fake{t: t, conn: b, reqs: make(chan *xenstore.Message, 1000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(f.reqs)
		for {
			m, err := xenstore.ReadMessage(b, xenstore.MaxPayload)
			if err != nil {
				return
			}
			f.reqs <- m
		}
	}()
	var c *xenstore.Client
	if device {
		c = xenstore.NewDeviceClient(a)
	} else {
		c = xenstore.NewClient(a)
	}
	t.Cleanup(func() {
		c.Close()
		b.Close()
		<-done
	})
	return c, f
}

func (f *fake) next() *xenstore.Message {
	f.t.Helper()
	select {
	case m, ok := <-f.reqs:
		if !ok {
			f.t.Fatal("fake: connection closed while waiting for a request")
		}
		return m
	case <-time.After(5 * time.Second):
		f.t.Fatal("fake: no request within 5s")
	}
	return nil
}

func (f *fake) sendRaw(b []byte) {
	f.t.Helper()
	f.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := f.conn.Write(b); err != nil {
		f.t.Fatalf("fake write: %v", err)
	}
}

func (f *fake) send(m *xenstore.Message) {
	f.t.Helper()
	b, err := m.AppendMarshal(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.sendRaw(b)
}

// reply answers request req with payload.
func (f *fake) reply(req *xenstore.Message, op xenstore.Op, payload string) {
	f.t.Helper()
	f.send(&xenstore.Message{Op: op, ReqID: req.ReqID, TxID: req.TxID, Payload: []byte(payload)})
}

// result runs fn in a goroutine and returns a channel with its error.
func result(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("call did not return within 5s")
	}
	return nil
}

func TestServerGoesAway(t *testing.T) {
	c, f := newFake(t, false)
	ctx := ctxT(t)
	// A watch, answered.
	wch := make(chan *xenstore.Watch, 1)
	werr := result(func() error {
		w, err := c.Watch(ctx, "/w", "tok")
		wch <- w
		return err
	})
	req := f.next()
	f.reply(req, xenstore.OpWatch, "OK\x00")
	f.send(&xenstore.Message{Op: xenstore.OpWatchEvent, Payload: []byte("/w\x00tok\x00")})
	if err := waitErr(t, werr); err != nil {
		t.Fatal(err)
	}
	w := <-wch
	expectEvents(t, w, "/w")

	// Many calls in flight that the server never answers.
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Read(ctx, "/x")
			errs <- err
		}()
	}
	for range n {
		f.next()
	}
	start := time.Now()
	f.conn.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("pending call: %v, want net.ErrClosed", err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("pending calls took %v to fail", d)
	}
	// Later calls fail at once; the watch's channel is closed.
	if _, err := c.Read(ctx, "/x"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("later call: %v", err)
	}
	if _, err := c.Watch(ctx, "/y", "t"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("later watch: %v", err)
	}
	if _, err := c.Begin(ctx); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("later begin: %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("Done not closed")
	}
	if !errors.Is(c.Err(), net.ErrClosed) {
		t.Fatalf("Err() = %v", c.Err())
	}
	if _, ok := <-w.Events(); ok {
		t.Fatal("watch channel still open")
	}
	if err := w.Close(); err != nil {
		t.Fatalf("watch close: %v", err)
	}
}

func TestClientCloseFailsPendingCalls(t *testing.T) {
	c, f := newFake(t, false)
	ctx := ctxT(t)
	ch := result(func() error { _, err := c.Read(ctx, "/x"); return err })
	f.next()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, ch); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("pending call after Close: %v", err)
	}
	if err := c.Write(ctx, "/x", "v"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
	c.Close() // a second Close is harmless
}

func TestEmbeddedServerCloses(t *testing.T) {
	e := newEnv(t)
	e.needEmbedded()
	ctx := ctxT(t)
	c := e.dial(0)
	if err := c.Write(ctx, "/x", "1"); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("client did not notice the server closing")
	}
	if _, err := c.Read(ctx, "/x"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after server close: %v", err)
	}
}

func TestContextCancel(t *testing.T) {
	c, f := newFake(t, false)
	ctx, cancel := context.WithCancel(ctxT(t))
	ch := result(func() error { _, err := c.Read(ctx, "/slow"); return err })
	slow := f.next()
	cancel()
	if err := waitErr(t, ch); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	// The late reply to the abandoned call is dropped; the next call gets
	// its own reply.
	ch2 := make(chan string, 1)
	errc := result(func() error {
		v, err := c.Read(ctxT(t), "/fast")
		ch2 <- v
		return err
	})
	fast := f.next()
	f.reply(slow, xenstore.OpRead, "slow value")
	f.reply(fast, xenstore.OpRead, "fast value")
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
	if v := <-ch2; v != "fast value" {
		t.Fatalf("got %q", v)
	}
	// A call with an expired context is not sent.
	if _, err := c.Read(ctx, "/x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("call with cancelled context: %v", err)
	}
}

// TestMalformedReplies scripts the server's answer to one READ (or another
// request) and checks the client's verdict: an error for that call only, or
// a broken connection (net.ErrClosed and ErrProtocol).
func TestMalformedReplies(t *testing.T) {
	hdr := func(op xenstore.Op, req, length uint32) []byte {
		m := &xenstore.Message{Op: op, ReqID: req}
		b, _ := m.AppendMarshal(nil)
		b[12], b[13], b[14], b[15] = byte(length), byte(length>>8), byte(length>>16), byte(length>>24)
		return b
	}
	msg := func(op xenstore.Op, req uint32, payload string) []byte {
		b, _ := (&xenstore.Message{Op: op, ReqID: req, Payload: []byte(payload)}).AppendMarshal(nil)
		return b
	}
	type call func(ctx context.Context, c *xenstore.Client) error
	read := func(ctx context.Context, c *xenstore.Client) error { _, err := c.Read(ctx, "/x"); return err }
	tests := []struct {
		name  string
		call  call
		op    xenstore.Op
		reply func(req uint32) []byte
		fatal bool // the connection is closed as broken
		want  error
	}{
		{"length past the limit", read, xenstore.OpRead, func(r uint32) []byte { return hdr(xenstore.OpRead, r, xenstore.MaxPayload+1) }, true, xenstore.ErrProtocol},
		{"huge length", read, xenstore.OpRead, func(r uint32) []byte { return hdr(xenstore.OpRead, r, 1<<31) }, true, xenstore.ErrProtocol},
		{"short header then close", read, xenstore.OpRead, func(r uint32) []byte { return hdr(xenstore.OpRead, r, 0)[:9] }, true, xenstore.ErrProtocol},
		{"short payload then close", read, xenstore.OpRead, func(r uint32) []byte { return append(hdr(xenstore.OpRead, r, 10), "abc"...) }, true, xenstore.ErrProtocol},
		{"reply of another type", read, xenstore.OpRead, func(r uint32) []byte { return msg(xenstore.OpDirectory, r, "") }, true, xenstore.ErrProtocol},
		{"unknown type", read, xenstore.OpRead, func(r uint32) []byte { return msg(99, r, "") }, true, xenstore.ErrProtocol},
		{"unknown req_id", read, xenstore.OpRead, func(r uint32) []byte { return msg(xenstore.OpRead, r+1000, "") }, true, xenstore.ErrProtocol},
		{"event without terminator", read, xenstore.OpRead, func(r uint32) []byte { return msg(xenstore.OpWatchEvent, 0, "/a\x00tok") }, true, xenstore.ErrProtocol},
		{"event not UTF-8", read, xenstore.OpRead, func(r uint32) []byte { return msg(xenstore.OpWatchEvent, 0, "/\xff\x00t\x00") }, true, xenstore.ErrProtocol},
		{"error unterminated", read, xenstore.OpRead, func(r uint32) []byte { return msg(xenstore.OpError, r, "ENOENT") }, false, xenstore.ErrProtocol},
		{"error not UTF-8", read, xenstore.OpRead, func(r uint32) []byte { return msg(xenstore.OpError, r, "E\xff\x00") }, false, xenstore.ErrProtocol},
		{"error empty", read, xenstore.OpRead, func(r uint32) []byte { return msg(xenstore.OpError, r, "") }, false, xenstore.ErrProtocol},
		{"error unknown name", read, xenstore.OpRead, func(r uint32) []byte { return msg(xenstore.OpError, r, "EWHATEVER\x00") }, false, syscall.EINVAL},
		{"write not OK", func(ctx context.Context, c *xenstore.Client) error { return c.Write(ctx, "/x", "v") }, xenstore.OpWrite,
			func(r uint32) []byte { return msg(xenstore.OpWrite, r, "KO\x00") }, false, xenstore.ErrProtocol},
		{"directory unterminated", func(ctx context.Context, c *xenstore.Client) error { _, err := c.Directory(ctx, "/x"); return err }, xenstore.OpDirectory,
			func(r uint32) []byte { return msg(xenstore.OpDirectory, r, "a\x00b") }, false, xenstore.ErrProtocol},
		{"directory not UTF-8", func(ctx context.Context, c *xenstore.Client) error { _, err := c.Directory(ctx, "/x"); return err }, xenstore.OpDirectory,
			func(r uint32) []byte { return msg(xenstore.OpDirectory, r, "\xc3\x28\x00") }, false, xenstore.ErrProtocol},
		{"directory empty name", func(ctx context.Context, c *xenstore.Client) error { _, err := c.Directory(ctx, "/x"); return err }, xenstore.OpDirectory,
			func(r uint32) []byte { return msg(xenstore.OpDirectory, r, "a\x00\x00") }, false, xenstore.ErrProtocol},
		{"bad permission", func(ctx context.Context, c *xenstore.Client) error { _, err := c.GetPerms(ctx, "/x"); return err }, xenstore.OpGetPerms,
			func(r uint32) []byte { return msg(xenstore.OpGetPerms, r, "x0\x00") }, false, xenstore.ErrProtocol},
		{"no permissions", func(ctx context.Context, c *xenstore.Client) error { _, err := c.GetPerms(ctx, "/x"); return err }, xenstore.OpGetPerms,
			func(r uint32) []byte { return msg(xenstore.OpGetPerms, r, "") }, false, xenstore.ErrProtocol},
		{"transaction id zero", func(ctx context.Context, c *xenstore.Client) error { _, err := c.Begin(ctx); return err }, xenstore.OpTransactionStart,
			func(r uint32) []byte { return msg(xenstore.OpTransactionStart, r, "0\x00") }, false, xenstore.ErrProtocol},
		{"transaction id not a number", func(ctx context.Context, c *xenstore.Client) error { _, err := c.Begin(ctx); return err }, xenstore.OpTransactionStart,
			func(r uint32) []byte { return msg(xenstore.OpTransactionStart, r, "-1\x00") }, false, xenstore.ErrProtocol},
		{"domain path unterminated", func(ctx context.Context, c *xenstore.Client) error { _, err := c.GetDomainPath(ctx, 1); return err }, xenstore.OpGetDomainPath,
			func(r uint32) []byte { return msg(xenstore.OpGetDomainPath, r, "/local/domain/1") }, false, xenstore.ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, f := newFake(t, false)
			ctx := ctxT(t)
			ch := result(func() error { return tt.call(ctx, c) })
			req := f.next()
			if req.Op != tt.op {
				t.Fatalf("request %v, want %v", req.Op, tt.op)
			}
			f.sendRaw(tt.reply(req.ReqID))
			if strings.Contains(tt.name, "then close") {
				f.conn.Close()
			}
			err := waitErr(t, ch)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if tt.fatal {
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("error %v does not say the connection is closed", err)
				}
				return
			}
			// The connection survived: the next call works.
			vals := make(chan string, 1)
			errc := result(func() error { v, err := c.Read(ctx, "/y"); vals <- v; return err })
			req = f.next()
			f.reply(req, xenstore.OpRead, "fine")
			if err := waitErr(t, errc); err != nil || <-vals != "fine" {
				t.Fatalf("next call after a bad reply: %v", err)
			}
		})
	}
}

// TestDeviceQuirks runs the client as on /dev/xen/xenbus: replies to WATCH
// with req_id 0 (older kernels), events with garbage req_id and tx_id, and
// the smaller payload limit.
func TestDeviceQuirks(t *testing.T) {
	c, f := newFake(t, true)
	ctx := ctxT(t)
	if c.MaxPayload() != xenstore.MaxPayloadDevice {
		t.Fatalf("payload limit %d", c.MaxPayload())
	}
	long := strings.Repeat("v", xenstore.MaxPayloadDevice-len("/x\x00")+1)
	mustErrno(t, c.Write(ctx, "/x", long), syscall.E2BIG)

	wch := make(chan *xenstore.Watch, 1)
	werr := result(func() error {
		w, err := c.Watch(ctx, "/w", "tok")
		wch <- w
		return err
	})
	req := f.next()
	f.send(&xenstore.Message{Op: xenstore.OpWatch, ReqID: 0, Payload: []byte("OK\x00")})
	f.send(&xenstore.Message{Op: xenstore.OpWatchEvent, ReqID: 0xdeadbeef, TxID: 77, Payload: []byte("/w\x00tok\x00")})
	if err := waitErr(t, werr); err != nil {
		t.Fatalf("watch (req %d): %v", req.ReqID, err)
	}
	w := <-wch
	expectEvents(t, w, "/w")
	// Requests go one at a time: a second request is not sent before the
	// first is answered.
	r1 := result(func() error { _, err := c.Read(ctx, "/a"); return err })
	first := f.next()
	r2 := result(func() error { _, err := c.Read(ctx, "/b"); return err })
	select {
	case m := <-f.reqs:
		t.Fatalf("second request %v sent while the first is outstanding", m)
	case <-time.After(100 * time.Millisecond):
	}
	f.reply(first, xenstore.OpRead, "a")
	second := f.next()
	f.reply(second, xenstore.OpRead, "b")
	for _, ch := range []<-chan error{r1, r2} {
		if err := waitErr(t, ch); err != nil {
			t.Fatal(err)
		}
	}
	// Watch.Close sends UNWATCH, answered OK.
	cerr := result(w.Close)
	un := f.next()
	if un.Op != xenstore.OpUnwatch || string(un.Payload) != "/w\x00tok\x00" {
		t.Fatalf("unwatch request %v %q", un.Op, un.Payload)
	}
	f.reply(un, xenstore.OpUnwatch, "OK\x00")
	if err := waitErr(t, cerr); err != nil {
		t.Fatal(err)
	}
}

// TestServerStopsReading checks that a call whose request cannot be written
// (the server does not read) still ends with its context, and that the
// connection, now possibly holding part of a message, is closed.
func TestServerStopsReading(t *testing.T) {
	checkLeaks(t)
	a, b := net.Pipe() // unbuffered: every write blocks until the other end reads
	defer b.Close()
	c := xenstore.NewClient(a)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Read(ctx, "/x")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked call: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("blocked call took %v", d)
	}
	if _, err := c.Read(ctxT(t), "/x"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("call after an interrupted write: %v", err)
	}
}
