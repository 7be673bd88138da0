//go:build linux

package shm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"idcfs/vchan"
)

var errClosedNet = net.ErrClosed

// waitEvent fails the test unless an event arrives within d.
func waitEvent(t testing.TB, ch vchan.EventChannel, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := ch.Wait(ctx); err != nil {
		t.Fatalf("Wait on port %d: %v", ch.Port(), err)
	}
}

// noEvent fails the test if an event arrives within d.
func noEvent(t testing.TB, ch vchan.EventChannel, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := ch.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on port %d: %v, want no event", ch.Port(), err)
	}
}

// drain consumes a pending (for example the bind-time spurious) event.
func drain(t testing.TB, ch vchan.EventChannel) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ch.Wait(ctx)
}

// pair binds dom 2 to an unbound port of dom 1 and drains the spurious
// bind event.
func pair(t testing.TB, srv, cli *Backend) (s, c vchan.EventChannel) {
	t.Helper()
	s, err := srv.AllocUnbound(cli.Domain())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, err = cli.Bind(srv.Domain(), s.Port())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	waitEvent(t, c, time.Second) // Xen marks a freshly bound port pending
	return s, c
}

func TestEventsWakeBothWays(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, c := pair(t, srv, cli)
	if s.Port() == 0 || c.Port() == 0 {
		t.Fatalf("ports %d %d", s.Port(), c.Port())
	}
	for range 3 {
		done := make(chan error, 1)
		go func() { done <- s.Wait(context.Background()) }()
		time.Sleep(5 * time.Millisecond)
		if err := c.Notify(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("server not woken")
		}
		if err := s.Notify(); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, c, 2*time.Second)
	}
}

func TestEventsCoalesce(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, c := pair(t, srv, cli)
	for range 1000 {
		if err := c.Notify(); err != nil {
			t.Fatal(err)
		}
	}
	// The reader takes the tokens in batches; give it time to see all.
	time.Sleep(50 * time.Millisecond)
	waitEvent(t, s, time.Second)
	noEvent(t, s, 50*time.Millisecond)
}

func TestWaitContextAndClose(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, c := pair(t, srv, cli)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Wait(ctx) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait: %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("cancel did not wake Wait")
	}

	go func() { done <- s.Wait(context.Background()) }()
	time.Sleep(10 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Wait: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not wake Wait")
	}
	if err := s.Notify(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Notify after Close: %v", err)
	}
	// The peer's end is now unbound: its notifies go nowhere, no error.
	if err := c.Notify(); err != nil {
		t.Errorf("Notify towards a closed port: %v", err)
	}
	noEvent(t, c, 30*time.Millisecond)
}

func TestUnboundPort(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, err := srv.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Nothing to deliver to: a no-op, and nothing is buffered for later.
	if err := s.Notify(); err != nil {
		t.Fatal(err)
	}
	noEvent(t, s, 20*time.Millisecond)
	c, err := cli.Bind(1, s.Port())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitEvent(t, c, time.Second) // the bind-time event, not the early notify
	noEvent(t, c, 30*time.Millisecond)
	noEvent(t, s, 30*time.Millisecond)
}

func TestBindRefusals(t *testing.T) {
	dir := hostDir(t)
	srv, cli, other := openDom(t, dir, 1), openDom(t, dir, 2), openDom(t, dir, 3)
	s, err := srv.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// A socket file nobody listens on (left by a crash of someone else).
	stale := filepath.Join(dir, "evtchn", "1", "77")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	// A regular file in place of a socket.
	os.WriteFile(filepath.Join(dir, "evtchn", "1", "78"), []byte("junk"), 0o600)

	tests := []struct {
		name string
		b    *Backend
		port uint32
		want error
	}{
		{"other domain", other, s.Port(), ErrRefused},
		{"missing port", cli, 99, ErrNoPort},
		{"port zero", cli, 0, ErrNoPort},
		{"stale socket", cli, 77, ErrNoPort},
		{"not a socket", cli, 78, ErrNoPort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := tt.b.Bind(1, tt.port)
			if !errors.Is(err, tt.want) {
				if ch != nil {
					ch.Close()
				}
				t.Fatalf("Bind: %v, want %v", err, tt.want)
			}
		})
	}
	// The refused attempt left the port usable by the right domain ...
	c, err := cli.Bind(1, s.Port())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// ... and a bound port takes no second binder.
	if ch, err := cli.Bind(1, s.Port()); err == nil {
		ch.Close()
		t.Fatal("second Bind to a bound port succeeded")
	}
	// Ports of failed binds were given back.
	c2, err := other.AllocUnbound(1)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2.Port() != 1 {
		t.Errorf("domain 3 port %d after failed binds, want 1", c2.Port())
	}
}

func TestRebindAfterPeerClose(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, c := pair(t, srv, cli)
	// The server side learns of the end of the connection in Wait (the
	// vchan Endpoint always has one pending).
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- s.Wait(ctx) }()
	c.Close()
	// As on Xen the port is unbound again, for the same domain.
	var c2 vchan.EventChannel
	var err error
	deadline := time.Now().Add(2 * time.Second)
	for {
		c2, err = cli.Bind(1, s.Port())
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("rebind: %v", err)
	}
	defer c2.Close()
	if err := c2.Notify(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("Wait across the rebind: %v", err)
	}
}

func TestSelfBind(t *testing.T) {
	b := openDom(t, hostDir(t), 0)
	s, err := b.AllocUnbound(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := b.Bind(0, s.Port())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Port() == s.Port() {
		t.Fatalf("both ends got port %d", c.Port())
	}
	c.Notify()
	waitEvent(t, s, time.Second)
}

// rawBind connects to a port socket by hand, as a misbehaving peer would,
// with an eventfd of its own in the hello. It closes the listener's eventfd.
func rawBind(t *testing.T, dir string, dom vchan.DomID, self uint16, port uint32) *net.UnixConn {
	t.Helper()
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	conn, fds, err := rawHandshake(dir, dom, self, port, unix.UnixRights(efd))
	if err != nil {
		t.Fatal(err)
	}
	closeFds(fds)
	return conn
}

// rawHandshake connects to a port socket, sends a hello with oob and reads
// the reply, which must be an accept; it returns the descriptors the reply
// carried.
func rawHandshake(dir string, dom vchan.DomID, self uint16, port uint32, oob []byte) (*net.UnixConn, []int, error) {
	path := filepath.Join(dir, "evtchn", fmt.Sprint(dom), fmt.Sprint(port))
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	h := hello{typ: msgHello, domain: self, port: 9, arg: port}
	if _, _, err := conn.WriteMsgUnix(h.append(nil), oob, nil); err != nil {
		conn.Close()
		return nil, nil, err
	}
	var buf [helloLen]byte
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	fds, err := readMsgFull(conn, buf[:])
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if r, err := parseHello(buf[:]); err != nil || r.typ != msgAccept {
		closeFds(fds)
		conn.Close()
		return nil, nil, fmt.Errorf("handshake reply %+v, %v", r, err)
	}
	conn.SetReadDeadline(time.Time{})
	return conn, fds, nil
}

func TestGarbageFromPeer(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"unknown token", []byte{0x7f}},
		{"event token", []byte{0x01}}, // events travel on the eventfds
		{"bad notice", notice{granter: 1, offset: 5000, ref: 8}.append(nil, tokNotice)},
		{"data after bye", []byte{tokBye, tokBye}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := hostDir(t)
			srv := openDom(t, dir, 1)
			s, err := srv.AllocUnbound(2)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			conn := rawBind(t, dir, 1, 2, s.Port())
			defer conn.Close()
			conn.Write(tc.data)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var werr error
			for range 3 { // an event before the garbage may come first
				if werr = s.Wait(ctx); werr != nil {
					break
				}
			}
			if !errors.Is(werr, ErrProtocol) {
				t.Fatalf("Wait: %v, want ErrProtocol", werr)
			}
			if err := s.Wait(ctx); !errors.Is(err, ErrProtocol) {
				t.Errorf("second Wait: %v, want ErrProtocol again", err)
			}
		})
	}
}

func TestBadHandshakeKeepsPort(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, err := srv.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	path := filepath.Join(dir, "evtchn", "1", "1")
	// Garbage instead of a hello, then a connection that says nothing
	// and just hangs up.
	for _, data := range [][]byte{[]byte("GET / HTTP/1.0\r\n\r\n"), nil} {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(data)
		conn.Close()
	}
	c, err := cli.Bind(1, s.Port())
	if err != nil {
		t.Fatalf("Bind after garbage: %v", err)
	}
	defer c.Close()
	c.Notify()
	waitEvent(t, s, 2*time.Second)
}

func TestConcurrentWaits(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, c := pair(t, srv, cli)
	const waiters = 3
	results := make(chan error, waiters)
	for range waiters {
		go func() { results <- s.Wait(context.Background()) }()
	}
	// Each event wakes one waiter, as on Xen.
	for i := range waiters - 1 {
		if err := c.Notify(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("waiter %d: %v", i, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("event %d woke nobody", i)
		}
	}
	// Close wakes the last one.
	s.Close()
	select {
	case err := <-results:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("last waiter: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not wake the last waiter")
	}
}

func TestWaitWithChangingContexts(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, c := pair(t, srv, cli)
	// A long-lived context, then short ones, then the long one again: a
	// cancellation is honoured whichever context came before.
	long, cancelLong := context.WithCancel(context.Background())
	defer cancelLong()
	c.Notify()
	if err := s.Wait(long); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		start := time.Now()
		err := s.Wait(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("round %d: %v", i, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("round %d: cancellation took %v", i, d)
		}
	}
	// A stale interrupt from an earlier context does not cost an event.
	c.Notify()
	if err := s.Wait(long); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait(long) }()
	time.Sleep(10 * time.Millisecond)
	cancelLong()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("cancel did not wake Wait")
	}
}

func TestNotifyNeverBlocks(t *testing.T) {
	// Nobody reads the server side: the socket buffer fills up, and
	// further events coalesce instead of blocking the sender.
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, c := pair(t, srv, cli)
	done := make(chan error, 1)
	go func() {
		for range 100000 {
			if err := c.Notify(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Notify blocked")
	}
	waitEvent(t, s, time.Second)
}

func TestWaitAllocatesNothing(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, c := pair(t, srv, cli)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Notify()
	s.Wait(ctx) // registers the context once
	allocs := testing.AllocsPerRun(200, func() {
		if err := c.Notify(); err != nil {
			t.Fatal(err)
		}
		if err := s.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Notify+Wait: %.1f allocations, want 0", allocs)
	}
}

func TestDeathNoticeFindsTheRightPage(t *testing.T) {
	// Domain 2 maps two pages that domain 1 granted under the same ref, one
	// after the other (the first grant was revoked, the ref reused), plus
	// one read-only page. A fake domain 3 bound to domain 2 registers
	// notices and vanishes without goodbye: only the page whose inode the
	// notice names is touched, and a read-only or unknown page never.
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	a, err := srv.Share(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref := a.Refs()[0]
	ma, err := cli.Map(1, []uint32{ref}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Close()
	inoA := ma.(*mapping).inos[0]
	a.Close()
	b, err := srv.Share(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Refs()[0] != ref {
		t.Fatalf("ref not reused: %d then %d", ref, b.Refs()[0])
	}
	mb, err := cli.Map(1, []uint32{ref}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	inoB := mb.(*mapping).inos[0]
	if inoA == inoB {
		t.Fatal("two grants share an inode")
	}
	c, err := srv.Share(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mc, err := cli.Map(1, c.Refs(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	inoC := mc.(*mapping).inos[0]
	for _, p := range [][]byte{ma.Bytes(), b.Bytes(), c.Bytes()} {
		p[5] = 0xAA
	}

	port, err := cli.AllocUnbound(3)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	conn := rawBind(t, dir, 2, 3, port.Port())
	var msg []byte
	for _, n := range []notice{
		{granter: 1, offset: 5, ref: ref, ino: inoB},
		{granter: 1, offset: 5, ref: c.Refs()[0], ino: inoC}, // read-only here
		{granter: 1, offset: 5, ref: 4000, ino: 1},           // not mapped
	} {
		msg = n.append(msg, tokNotice)
	}
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	conn.Close() // no goodbye: a death
	waitEvent(t, port, 2*time.Second)
	if got := b.Bytes()[5]; got != 0 {
		t.Errorf("named page: byte %#x, want 0", got)
	}
	if got := ma.Bytes()[5]; got != 0xAA {
		t.Errorf("earlier grant under the same ref: byte %#x, want untouched", got)
	}
	if got := c.Bytes()[5]; got != 0xAA {
		t.Errorf("read-only mapped page: byte %#x, want untouched", got)
	}
}
