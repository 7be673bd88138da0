//go:build linux

package shm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"idcfs/vchan"
)

// openFds counts this process's open descriptors.
func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// settledFds is openFds once the count has not changed for 50 ms
// (connections a peer dropped are closed by goroutines, a little later).
func settledFds(t testing.TB) int {
	t.Helper()
	n := openFds(t)
	for i := 0; i < 200; i++ {
		time.Sleep(50 * time.Millisecond)
		m := openFds(t)
		if m == n {
			break
		}
		n = m
	}
	return n
}

// checkFds fails the test unless the descriptor count comes back to want
// (goroutines that close descriptors may lag a little).
func checkFds(t testing.TB, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	n := openFds(t)
	for n != want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		n = openFds(t)
	}
	if n != want {
		ents, _ := os.ReadDir("/proc/self/fd")
		var links []string
		for _, e := range ents {
			l, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
			links = append(links, e.Name()+"="+l)
		}
		t.Fatalf("%s: %d descriptors open, want %d: %v", what, n, want, links)
	}
}

// newTestEventfd is an eventfd closed at the end of the test.
func newTestEventfd(t testing.TB) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// hostileFds are descriptor sets a misbehaving peer might send instead of
// one eventfd. The descriptors are closed at the end of the test.
func hostileFds(t *testing.T) map[string][]int {
	t.Helper()
	p := make([]int, 2)
	if err := unix.Pipe2(p, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFds(p) })
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(tfd) })
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFds(sp[:]) })
	many := make([]int, maxRecvFds+2)
	for i := range many {
		many[i] = newTestEventfd(t)
	}
	return map[string][]int{
		"no descriptor":  nil,
		"two eventfds":   {newTestEventfd(t), newTestEventfd(t)},
		"pipe":           {p[1]},
		"timerfd":        {tfd},
		"regular file":   {int(f.Fd())},
		"socket":         {sp[0]},
		"ten eventfds":   many,
		"eventfd twice":  {many[0], many[0]},
		"eventfd + pipe": {many[0], p[0]},
	}
}

func rights(fds []int) []byte {
	if len(fds) == 0 {
		return nil
	}
	return unix.UnixRights(fds...)
}

func TestHostileBinderDescriptors(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	s, err := srv.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cases := hostileFds(t)
	efd := newTestEventfd(t)
	// Warm up: the first handshake may open descriptors for good (the
	// runtime's, for example).
	if _, _, err := rawHandshake(dir, 1, 2, s.Port(), nil); err == nil {
		t.Fatal("hello without a descriptor accepted")
	}
	before := settledFds(t)
	for name, fds := range cases {
		t.Run(name, func(t *testing.T) {
			conn, got, err := rawHandshake(dir, 1, 2, s.Port(), rights(fds))
			if err == nil {
				closeFds(got)
				conn.Close()
				t.Fatal("handshake accepted")
			}
			t.Logf("refused: %v", err)
			checkFds(t, before, "after the refused handshake")
		})
	}
	// A hello split in two, its descriptor on the second part, is fine;
	// a descriptor sent with the bytes after the hello never reaches us.
	path := filepath.Join(dir, "evtchn", "1", fmt.Sprint(s.Port()))
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	h := hello{typ: msgHello, domain: 2, port: 9, arg: s.Port()}.append(nil)
	conn.Write(h[:5])
	time.Sleep(10 * time.Millisecond)
	conn.WriteMsgUnix(h[5:], unix.UnixRights(efd), nil)
	var buf [helloLen]byte
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	got, err := readMsgFull(conn, buf[:])
	if err != nil {
		t.Fatal(err)
	}
	if r, err := parseHello(buf[:]); err != nil || r.typ != msgAccept || len(got) != 1 {
		t.Fatalf("split hello: reply %+v, %v, %d descriptors", r, err, len(got))
	}
	conn.WriteMsgUnix([]byte{tokBye}, unix.UnixRights(efd), nil)
	conn.Close()
	closeFds(got)
	checkFds(t, before, "after a descriptor sent with the goodbye")
	// The port still works for an honest binder.
	deadline := time.Now().Add(2 * time.Second)
	var c vchan.EventChannel
	for {
		c, err = cli.Bind(1, s.Port())
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Bind after hostile binders: %v", err)
	}
	defer c.Close()
	c.Notify()
	waitEvent(t, s, 2*time.Second)
}

// fakeListener listens on port of domain dom in dir and answers each
// binder's hello with an accept carrying reply (descriptors).
func fakeListener(t *testing.T, dir string, dom vchan.DomID, port uint32, reply func() []byte) {
	t.Helper()
	d := filepath.Join(dir, "evtchn", fmt.Sprint(dom))
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(d, fmt.Sprint(port)), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			conn, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			var buf [helloLen]byte
			fds, err := readMsgFull(conn, buf[:])
			closeFds(fds)
			if err == nil {
				r := hello{typ: msgAccept, domain: uint16(dom), port: port}
				conn.WriteMsgUnix(r.append(nil), reply(), nil)
			}
			conn.Close()
		}
	}()
}

func TestHostileListenerDescriptors(t *testing.T) {
	dir := hostDir(t)
	cli := openDom(t, dir, 2)
	cases := hostileFds(t)
	// The reply's descriptors (the fake listener's goroutine reads them).
	var fds atomic.Pointer[[]int]
	fds.Store(new([]int))
	fakeListener(t, dir, 1, 1, func() []byte { return rights(*fds.Load()) })
	if c, err := cli.Bind(1, 1); err == nil { // warm up
		c.Close()
		t.Fatal("accept without a descriptor taken")
	}
	before := settledFds(t)
	for name, set := range cases {
		t.Run(name, func(t *testing.T) {
			fds.Store(&set)
			c, err := cli.Bind(1, 1)
			if err == nil {
				c.Close()
				t.Fatal("Bind succeeded")
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("Bind: %v, want ErrProtocol", err)
			}
			t.Logf("Bind: %v", err)
			checkFds(t, before, "after the failed Bind")
		})
	}
	// An honest reply works, and closing it closes everything.
	fds.Store(&[]int{newTestEventfd(t)})
	before = settledFds(t)
	c, err := cli.Bind(1, 1)
	if err != nil {
		t.Fatalf("Bind with an eventfd: %v", err)
	}
	c.Close()
	checkFds(t, before, "after Bind and Close")
}

func TestNoDescriptorLeaks(t *testing.T) {
	dir := hostDir(t)
	srv, cli := openDom(t, dir, 1), openDom(t, dir, 2)
	cycle := func() {
		// Orderly: either side closes first.
		for _, clientFirst := range []bool{true, false} {
			s, c := pairNoCleanup(t, srv, cli)
			c.Notify()
			waitEvent(t, s, 2*time.Second)
			s.Notify()
			waitEvent(t, c, 2*time.Second)
			if clientFirst {
				c.Close()
				s.Close()
			} else {
				s.Close()
				c.Close()
			}
		}
		// A peer that vanishes without goodbye, then a second binder on
		// the same port, which then dies too; then an honest one.
		s, err := srv.AllocUnbound(2)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			conn := rawBindRetry(t, dir, 1, 2, s.Port())
			conn.Close()
			waitEvent(t, s, 2*time.Second)
		}
		c := bindRetry(t, cli, 1, s.Port())
		drain(t, c)
		s.Notify()
		waitEvent(t, c, 2*time.Second)
		c.Close()
		s.Close()
		// A failed Bind (nobody listens).
		if c, err := cli.Bind(1, 99); err == nil {
			c.Close()
			t.Fatal("Bind to a missing port succeeded")
		}
	}
	cycle()
	before := settledFds(t)
	for range 30 {
		cycle()
	}
	checkFds(t, before, "after 30 cycles")
}

// pairNoCleanup is pair without cleanups: the caller closes both ends.
func pairNoCleanup(t testing.TB, srv, cli *Backend) (s, c vchan.EventChannel) {
	t.Helper()
	s, err := srv.AllocUnbound(cli.Domain())
	if err != nil {
		t.Fatal(err)
	}
	c, err = cli.Bind(srv.Domain(), s.Port())
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, c, time.Second)
	return s, c
}

// bindRetry binds, retrying while the port is not listening yet.
func bindRetry(t testing.TB, b *Backend, peer vchan.DomID, port uint32) vchan.EventChannel {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := b.Bind(peer, port)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("bind: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

func rawBindRetry(t *testing.T, dir string, dom vchan.DomID, self uint16, port uint32) *net.UnixConn {
	t.Helper()
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	deadline := time.Now().Add(2 * time.Second)
	for {
		conn, fds, err := rawHandshake(dir, dom, self, port, unix.UnixRights(efd))
		if err == nil {
			closeFds(fds)
			return conn
		}
		if time.Now().After(deadline) {
			t.Fatalf("raw bind: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNoDescriptorLeaksAcrossDeaths(t *testing.T) {
	dir := hostDir(t)
	s, sh := portAndPage(t, dir)
	page := sh.Bytes()
	cycle := func() {
		page[20] = 2
		ch, _ := startChild(t, "client-map", dir, fmt.Sprint(s.Port()), fmt.Sprint(sh.Refs()[0]))
		if page[20] != 1 {
			t.Fatalf("child's write not seen: cli_live %d", page[20])
		}
		drain(t, s)
		ch.kill(t)
		waitEvent(t, s, 2*time.Second)
		if page[20] != 0 {
			t.Fatalf("cli_live %d after the child's death", page[20])
		}
	}
	cycle()
	before := settledFds(t)
	for range 5 {
		cycle()
	}
	checkFds(t, before, "after 5 deaths")
}

// rawBinder binds to a fresh unbound port of domain 1 as domain 2 by hand,
// handing over an eventfd of its own (efd); it returns the port, efd and
// the descriptors the listener sent back (its eventfd first).
func rawBinder(t *testing.T) (s vchan.EventChannel, efd int, fds []int) {
	t.Helper()
	dir := hostDir(t)
	srv := openDom(t, dir, 1)
	s, err := srv.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	efd = newTestEventfd(t)
	conn, fds, err := rawHandshake(dir, 1, 2, s.Port(), unix.UnixRights(efd))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFds(fds); conn.Close() })
	return s, efd, fds
}

func TestPeerClearsNonblock(t *testing.T) {
	if !nowaitReads() {
		t.Skip("kernel cannot read an eventfd with RWF_NOWAIT")
	}
	// The binder holds our eventfd's open file description and clears its
	// O_NONBLOCK: Wait still honours its context and Close.
	s, _, fds := rawBinder(t)
	if err := unix.SetNonblock(fds[0], false); err != nil {
		t.Fatal(err)
	}
	noEvent(t, s, 30*time.Millisecond)
	unix.Write(fds[0], eventOne[:]) // the binder's Notify
	waitEvent(t, s, time.Second)
	done := make(chan error, 1)
	go func() { done <- s.Wait(context.Background()) }()
	time.Sleep(10 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Wait: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not wake Wait")
	}
}

func TestNotifySaturatedCounter(t *testing.T) {
	// The binder fills its own eventfd's counter: our Notify cannot add
	// to it and returns at once (the event coalesces).
	s, efd, _ := rawBinder(t)
	var max [8]byte
	binary.LittleEndian.PutUint64(max[:], 1<<64-2)
	if _, err := unix.Write(efd, max[:]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Notify() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Notify: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Notify blocked on a full counter")
	}
	var got [8]byte
	if _, err := unix.Read(efd, got[:]); err != nil || binary.LittleEndian.Uint64(got[:]) != 1<<64-2 {
		t.Fatalf("counter %x, %v", got, err)
	}
	if err := s.Notify(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Read(efd, got[:]); err != nil || binary.LittleEndian.Uint64(got[:]) != 1 {
		t.Fatalf("counter %x after one Notify, %v", got, err)
	}
}
