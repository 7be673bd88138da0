package linkmgr

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"idcfs/linkmgr/xenstore"
	"idcfs/proto"
	"idcfs/vchan"
)

// fakePeer is a hostile dom 3: it follows the Xenstore handshake to get a
// ring from dom 1 and then writes whatever bytes a test wants.
type fakePeer struct {
	t     *testing.T
	h     *testHost
	xs    *xenstore.Client
	store *Store
	seq   int
}

func newFakePeer(t *testing.T, h *testHost) *fakePeer {
	xs := h.client(3)
	if err := xs.Write(context.Background(), DaemonPath(3), "hostile"); err != nil {
		t.Fatal(err)
	}
	return &fakePeer{t: t, h: h, xs: xs, store: NewStore(xs, 3)}
}

// link asks dom 1 for a link and maps the ring it publishes. Like a real
// client it asks again while no announcement comes: dom 1 ignores a
// request while it still holds the previous link, which it drops only once
// it sees that ring closed.
func (f *fakePeer) link() *vchan.Endpoint {
	f.t.Helper()
	ctx := testCtx(f.t, 30*time.Second)
	prev, _ := f.xs.Read(ctx, RequestPath(3, 1))
	var asked time.Time
	waitFor(f.t, "ring announcement", func() bool {
		if time.Since(asked) >= retryInterval {
			f.seq++
			if err := f.xs.Write(ctx, RequestPath(1, 3), fmt.Sprintf("hostile.%d", f.seq)); err != nil {
				f.t.Fatal(err)
			}
			asked = time.Now()
		}
		v, _ := f.xs.Read(ctx, RequestPath(3, 1))
		return v != prev
	})
	for {
		ep, err := vchan.Dial(ctx, f.h.heap.Domain(3), f.store, 1, RingPath(1, 3))
		if err == nil {
			f.t.Cleanup(func() { ep.Close() })
			return ep
		}
		if ctx.Err() != nil {
			f.t.Fatalf("mapping dom 1's ring: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func send(t *testing.T, ep *vchan.Endpoint, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		if _, err := ep.Write(f); err != nil {
			t.Fatalf("writing to the ring: %v", err)
		}
	}
}

// next reads frames until one of type typ on conn arrives.
func next(t *testing.T, ep *vchan.Endpoint, typ proto.Type, conn uint32) []byte {
	t.Helper()
	for {
		var hb [proto.HeaderLen]byte
		if _, err := io.ReadFull(ep, hb[:]); err != nil {
			t.Fatalf("waiting for %s on conn %d: %v", typ, conn, err)
		}
		h, err := proto.ParseHeader(hb[:], proto.MaxFrame)
		if err != nil {
			t.Fatalf("dom 1 sent a bad header: %v", err)
		}
		body := make([]byte, h.Length)
		if _, err := io.ReadFull(ep, body); err != nil {
			t.Fatal(err)
		}
		if h.Type == typ && h.Conn == conn {
			return body
		}
	}
}

func hello(dom uint16) []byte {
	return proto.Hello{Version: 1, Dom: dom, MaxFrame: proto.DefaultMaxFrame}.AppendFrame(nil, 0)
}

func rawHeader(typ byte, conn, length uint32) []byte {
	b := []byte{typ, 0, 0, 0}
	b = binary.LittleEndian.AppendUint32(b, conn)
	return binary.LittleEndian.AppendUint32(b, length)
}

func TestHostilePeer(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 2, 3})
	m1 := h.manager(1, func(c *Config) { c.Window = 100000 })
	m2 := h.manager(2)
	ln, _ := m1.Listen(5, 0)
	ctx := testCtx(t, 30*time.Second)

	// A well-behaved link from dom 2 that must keep working throughout.
	good, err := m2.Dial(ctx, 1, 5)
	if err != nil {
		t.Fatal(err)
	}
	goodS, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkGood := func(round int) {
		t.Helper()
		msg := pattern(uint64(round), 70000)
		go good.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(goodS, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("good link broken after round %d: %v", round, err)
		}
	}
	checkGood(0)

	f := newFakePeer(t, h)

	t.Run("credit overrun resets the connection", func(t *testing.T) {
		ep := f.link()
		send(t, ep, hello(3), proto.ConnectReq{DstPort: 5, SrcPort: 1, Window: 1 << 16}.AppendFrame(nil, 2))
		next(t, ep, proto.TypeHello, 0)
		rsp, err := proto.ParseConnectRsp(next(t, ep, proto.TypeConnectRsp, 2))
		if err != nil || rsp.Status != proto.StatusAccepted || rsp.Window != 100000 {
			t.Fatalf("CONNECT_rsp %+v, %v", rsp, err)
		}
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Exactly the window, in two frames, then one byte too many.
		within := pattern(7, int(rsp.Window))
		send(t, ep,
			proto.Data{Payload: within[:60000]}.AppendFrame(nil, 2),
			proto.Data{Payload: within[60000:]}.AppendFrame(nil, 2),
			proto.Data{Payload: []byte{1}}.AppendFrame(nil, 2))
		d, err := proto.ParseDisconnect(next(t, ep, proto.TypeDisconnect, 2))
		if err != nil || d.Reason != proto.ReasonCredit {
			t.Fatalf("DISCONNECT_ind %+v, %v; want credit overrun", d, err)
		}
		// Everything within the credit is delivered, then the reset.
		got, err := io.ReadAll(s)
		if !errors.Is(err, ErrReset) || !errors.Is(err, ErrProtocol) || !bytes.Equal(got, within) {
			t.Fatalf("read %d bytes (want %d), %v (want ErrReset)", len(got), len(within), err)
		}
		s.Close()
		if !h.logw.has("exceeded its credit") {
			t.Error("credit overrun not logged")
		}

		// The link survives a connection-level violation.
		send(t, ep, proto.ConnectReq{DstPort: 5, Window: 1 << 16}.AppendFrame(nil, 4))
		if rsp, _ := proto.ParseConnectRsp(next(t, ep, proto.TypeConnectRsp, 4)); rsp.Status != proto.StatusAccepted {
			t.Fatalf("second connect: %v", rsp.Status)
		}
		s, err = ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// A CREDIT acknowledging bytes never sent resets the connection.
		send(t, ep, proto.Credit{BufAlloc: 1, FwdCnt: 1 << 40}.AppendFrame(nil, 4))
		if d, _ := proto.ParseDisconnect(next(t, ep, proto.TypeDisconnect, 4)); d.Reason != proto.ReasonProtocol {
			t.Fatalf("bad CREDIT answered with %v", d.Reason)
		}
		if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
			t.Fatalf("read after bad CREDIT: %v", err)
		}
		s.Close()
		// Data after SHUTDOWN(write).
		send(t, ep, proto.ConnectReq{DstPort: 5, Window: 1 << 16}.AppendFrame(nil, 6))
		next(t, ep, proto.TypeConnectRsp, 6)
		s, _ = ln.Accept(ctx)
		send(t, ep, proto.Shutdown{How: proto.ShutWrite}.AppendFrame(nil, 6), proto.Data{Payload: []byte("late")}.AppendFrame(nil, 6))
		if d, _ := proto.ParseDisconnect(next(t, ep, proto.TypeDisconnect, 6)); d.Reason != proto.ReasonProtocol {
			t.Fatalf("data after shutdown answered with %v", d.Reason)
		}
		s.Close()
		ep.Close()
		checkGood(1)
	})

	t.Run("peer that stops reading is still cut off", func(t *testing.T) {
		ep := f.link()
		send(t, ep, hello(3), proto.ConnectReq{DstPort: 5, Window: 1 << 30}.AppendFrame(nil, 2))
		s, err := ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Dom 1 writes far more than the ring holds; the peer never reads.
		werr := make(chan error, 1)
		go func() {
			_, err := s.Write(make([]byte, 8<<20))
			werr <- err
		}()
		waitFor(t, "ring full", func() bool { return s.Info().BytesOut >= DefaultRingSize/2 })
		time.Sleep(20 * time.Millisecond)
		// Then it breaks the protocol: dom 1 must drop the link even though
		// its writer is stuck on the full ring.
		send(t, ep, rawHeader(42, 0, 0))
		if err := <-werr; !errors.Is(err, ErrReset) {
			t.Fatalf("write to a peer that stopped reading, after the link was dropped: %v", err)
		}
		s.Close()
		ep.Close()
		checkGood(100)
	})

	t.Run("peer that floods requests without reading is cut off", func(t *testing.T) {
		ep := f.link()
		send(t, ep, hello(3))
		var b []byte
		for id := uint32(2); id < 80000; id += 2 {
			b = proto.ConnectReq{DstPort: 99}.AppendFrame(b, id)
		}
		ep.Write(b) // fails once dom 1 drops the link
		waitFor(t, "link dropped", func() bool { return h.logw.has("the peer does not read") })
		ep.Close()
		checkGood(200)
	})

	t.Run("peer drops the link blaming this side", func(t *testing.T) {
		ep := f.link()
		send(t, ep, hello(3), proto.Disconnect{Reason: proto.ReasonProtocol}.AppendFrame(nil, 0))
		waitFor(t, "link dropped", func() bool { return h.logw.has("it says this side broke the protocol") })
		// The warning names who blamed whom: dom 1 did not call dom 3 a
		// protocol breaker.
		if h.logw.hasAll("peer broke the protocol", "peer=3", "peer dropped the link") {
			t.Error("a drop by the peer logged as the peer breaking the protocol")
		}
		ep.Close()
		checkGood(300)
	})

	linkFatal := []struct {
		name   string
		frames [][]byte
		log    string
	}{
		{"unknown type", [][]byte{hello(3), rawHeader(99, 2, 0)}, "unknown message type"},
		{"data longer than max frame", [][]byte{hello(3), rawHeader(byte(proto.TypeData), 2, proto.DefaultMaxFrame+1)}, "bad length"},
		{"huge length", [][]byte{hello(3), rawHeader(byte(proto.TypeData), 2, 0xffffffff)}, "bad length"},
		{"data before hello", [][]byte{proto.Data{Payload: []byte("x")}.AppendFrame(nil, 2)}, "before HELLO"},
		{"hello from the wrong domain", [][]byte{hello(7)}, "HELLO from dom 7"},
		{"second hello", [][]byte{hello(3), hello(3)}, "second HELLO"},
		{"connect with the server's id parity", [][]byte{hello(3), proto.ConnectReq{DstPort: 5}.AppendFrame(nil, 1)}, "of our parity"},
		{"connect id reused", [][]byte{hello(3), proto.ConnectReq{DstPort: 5}.AppendFrame(nil, 2), proto.ConnectReq{DstPort: 5}.AppendFrame(nil, 2)}, "in use"},
		{"control body too long", [][]byte{hello(3), append(rawHeader(byte(proto.TypeCredit), 2, 65), make([]byte, 65)...)}, "bad length"},
		{"short hello body", [][]byte{append(rawHeader(byte(proto.TypeHello), 0, 4), 1, 0, 3, 0)}, "bad length"},
	}
	for i, tc := range linkFatal {
		t.Run(tc.name, func(t *testing.T) {
			ep := f.link()
			send(t, ep, tc.frames...)
			// Dom 1 drops the link, telling us why first.
			d, err := proto.ParseDisconnect(next(t, ep, proto.TypeDisconnect, 0))
			if err != nil || d.Reason != proto.ReasonProtocol {
				t.Fatalf("link DISCONNECT_ind %+v, %v", d, err)
			}
			if _, err := io.ReadAll(ep); err != nil && !errors.Is(err, vchan.ErrPeerClosed) {
				t.Logf("ring after the drop: %v", err)
			}
			if !h.logw.has(tc.log) {
				t.Errorf("no log line with %q", tc.log)
			}
			// Accepted connections of the hostile link are reset, never leaked.
			for {
				s, err := ln.TryAccept()
				if err != nil {
					break
				}
				if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrReset) || !errors.Is(err, ErrProtocol) {
					t.Errorf("connection of the dropped link: %v", err)
				}
				s.Close()
			}
			ep.Close()
			checkGood(2 + i)
		})
	}
	good.Close()
	goodS.Close()
}

// TestPartialFrameReachesRead: bytes of a DATA_ind whose rest has not
// arrived yet reach a blocked Read at once, also when they follow a whole
// frame whose wakeup was deferred; the rest follows when the peer sends it.
func TestPartialFrameReachesRead(t *testing.T) {
	checkLeaks(t)
	h := newTestHost(t, []vchan.DomID{1, 3})
	m1 := h.manager(1)
	ln, _ := m1.Listen(5, 0)
	ctx := testCtx(t, 20*time.Second)
	f := newFakePeer(t, h)
	ep := f.link()
	send(t, ep, hello(3), proto.ConnectReq{DstPort: 5, SrcPort: 1, Window: 1 << 16}.AppendFrame(nil, 2))
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := pattern(7, 1100)
	got := make(chan []byte)
	go func() {
		var all []byte
		buf := make([]byte, 4096)
		for len(all) < len(msg) {
			n, err := s.Read(buf)
			if err != nil {
				t.Errorf("read after %d bytes: %v", len(all), err)
				break
			}
			all = append(all, buf[:n]...)
			got <- append([]byte(nil), all...)
		}
		close(got)
	}()
	readWaits := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.waiter != nil
	}
	waitFor(t, "the Read to block", readWaits)
	// A whole frame; then, once the Read waits again, the header and 300 of
	// the 1000 bytes of the next.
	send(t, ep, proto.Data{Payload: msg[:100]}.AppendFrame(nil, 2))
	if b := <-got; !bytes.Equal(b, msg[:100]) {
		t.Fatalf("first read %d bytes, want the 100 of the first frame", len(b))
	}
	waitFor(t, "the Read to block again", readWaits)
	send(t, ep, rawHeader(byte(proto.TypeData), 2, 1000), msg[100:400])
	timeout := time.After(5 * time.Second)
	for have := 100; have < 400; {
		select {
		case b := <-got:
			if !bytes.Equal(b, msg[:len(b)]) {
				t.Fatalf("read %d bytes that differ from those sent", len(b))
			}
			have = len(b)
		case <-timeout:
			t.Fatalf("only %d of the 400 bytes received so far reached the Read", have)
		}
	}
	send(t, ep, msg[400:])
	var last []byte
	for b := range got {
		last = b
	}
	if !bytes.Equal(last, msg) {
		t.Fatalf("read %d bytes, want the %d sent", len(last), len(msg))
	}
}
