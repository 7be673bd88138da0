package linkmgr

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"idcfs/vchan"
)

// TestPeerDeath kills dom 2's process mid-transfer: every connection dom 1
// has with dom 2 fails with ErrReset, the link to dom 3 is untouched, and a
// restarted daemon in dom 2 links again.
func TestPeerDeath(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2, 3})
	m1 := h.manager(1)
	m2 := h.manager(2)
	m3 := h.manager(3)
	ln, _ := m1.Listen(1, 0)
	ctx := testCtx(t, 30*time.Second)

	// Four busy connections from dom 2; dom 1 reads them.
	const n2 = 4
	readErrs := make(chan error, n2)
	var readers sync.WaitGroup
	for range n2 {
		c, err := m2.Dial(ctx, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			buf := make([]byte, 32<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
		readers.Add(1)
		go func() {
			defer readers.Done()
			_, err := io.Copy(io.Discard, s)
			readErrs <- err
			s.Close()
		}()
	}
	// One connection from dom 3.
	c3, err := m3.Dial(ctx, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	s3, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "traffic from dom 2", func() bool {
		for _, li := range m1.Links() {
			if li.Peer == 2 && li.BytesIn > 1<<20 {
				return true
			}
		}
		return false
	})

	killed := time.Now()
	h.heap.Kill(2)
	readers.Wait()
	detect := time.Since(killed)
	close(readErrs)
	for err := range readErrs {
		if !errors.Is(err, ErrReset) {
			t.Errorf("read on a connection to the dead domain: %v, want ErrReset", err)
		}
	}
	t.Logf("all %d connections of the dead peer failed %v after the kill", n2, detect)
	if detect > 5*time.Second {
		t.Errorf("peer death took %v to notice", detect)
	}
	waitFor(t, "link to dom 2 dropped", func() bool {
		for _, li := range m1.Links() {
			if li.Peer == 2 {
				return false
			}
		}
		return true
	})

	// Dom 3 is unaffected.
	msg := pattern(3, 100000)
	go c3.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s3, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("dom 3 transfer after dom 2 died: %v", err)
	}

	// Dom 2's daemon restarts and links again.
	m2.Close()
	m2b := h.manager(2)
	c, err := m2b.Dial(ctx, 1, 1)
	if err != nil {
		t.Fatalf("dial after restart: %v", err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("again"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "again" {
		t.Fatalf("read %q, %v", buf, err)
	}
	c.Close()
	s.Close()
	c3.Close()
	s3.Close()
}

// TestReleaseDomain: the peer domain is destroyed while its ring still
// looks alive; @releaseDomain makes dom 1 drop the link at once.
func TestReleaseDomain(t *testing.T) {
	checkLeaks(t)
	h, c, s := connectedPair(t)
	if err := h.xsd.ReleaseDomain(2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
		t.Fatalf("read after the peer domain was released: %v", err)
	}
	c.Close()
	s.Close()
}

func TestSimultaneousDial(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	ms := []*Manager{h.manager(1), h.manager(2)}
	var srv sync.WaitGroup
	for _, m := range ms {
		ln, _ := m.Listen(9, 0)
		echoServer(t, ln, &srv)
		defer ln.Close()
	}
	ctx := testCtx(t, 20*time.Second)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 20 {
		m, peer := ms[i%2], vchan.DomID(2-i%2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c, err := m.Dial(ctx, peer, 9)
			if err != nil {
				t.Errorf("dom %d -> dom %d: %v", m.Self(), peer, err)
				return
			}
			defer c.Close()
			c.Write([]byte("ping"))
			c.CloseWrite()
			if b, err := io.ReadAll(c); err != nil || string(b) != "ping" {
				t.Errorf("echo %q, %v", b, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	for _, m := range ms {
		links := m.Links()
		if len(links) != 1 || links[0].State != "up" {
			t.Errorf("dom %d links: %+v, want exactly one", m.Self(), links)
		}
	}
	if t.Failed() {
		return
	}
	if r := ms[0].Links()[0].Role; r != roleServer {
		t.Errorf("dom 1 role %s, want server (lower domid serves)", r)
	}
	for _, m := range ms {
		for _, ln := range []uint32{9} {
			if l := m.listener(ln); l != nil {
				l.Close()
			}
		}
	}
	srv.Wait()
}

func TestIdleTeardown(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2})
	idle := func(c *Config) { c.IdleTimeout = 100 * time.Millisecond }
	m1 := h.manager(1, idle)
	m2 := h.manager(2, idle)
	ln, _ := m1.Listen(3, 0)
	ctx := testCtx(t, 10*time.Second)
	for round := range 3 {
		c, err := m2.Dial(ctx, 1, 3)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// A link with connections is never idle.
		time.Sleep(250 * time.Millisecond)
		c.Write([]byte("x"))
		if _, err := s.Read(make([]byte, 1)); err != nil {
			t.Fatalf("round %d: read on a busy link: %v", round, err)
		}
		c.Close()
		s.Close()
		waitFor(t, "idle links torn down", func() bool { return len(m1.Links()) == 0 && len(m2.Links()) == 0 })
	}
	if !h.logw.has("link down") || !h.logw.has("reason=idle") {
		t.Error("idle teardown not logged")
	}
	// A dial racing with the idle teardown still gets through.
	for range 20 {
		c, err := m2.Dial(ctx, 1, 3)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		s.Close()
		time.Sleep(95 * time.Millisecond)
	}
}

// TestResetWakesAfterError: a reset wakes the connection's waiters only
// once the error is there to see. A connect in flight waits on wsig and
// then reads resetErr; woken before resetErr was set, it went back to
// waiting and the Dial hung until its timeout (seen once in
// TestIdleTeardown's dial racing the idle teardown).
func TestResetWakesAfterError(t *testing.T) {
	checkLeaks(t)
	_, c, s := connectedPair(t)
	defer c.Close()
	defer s.Close()
	// Drain wakeups from the set-up.
	for _, ch := range []chan struct{}{c.wsig, c.rsig} {
		select {
		case <-ch:
		default:
		}
	}
	// Hold c.mu: resetBy cannot set resetErr until it is released, so no
	// waiter may be woken meanwhile.
	c.mu.Lock()
	done := make(chan struct{})
	go func() {
		c.resetBy(fmt.Errorf("%w: test", ErrReset))
		close(done)
	}()
	time.Sleep(50 * time.Millisecond)
	var woke []string
	select {
	case <-c.wsig:
		woke = append(woke, "wsig")
	default:
	}
	select {
	case <-c.rsig:
		woke = append(woke, "rsig")
	default:
	}
	c.mu.Unlock()
	<-done
	if len(woke) > 0 {
		t.Fatalf("%v signalled before resetErr was set", woke)
	}
	c.mu.Lock()
	err := c.resetErr
	c.mu.Unlock()
	if !errors.Is(err, ErrReset) {
		t.Fatalf("resetErr %v after resetBy", err)
	}
}
