package linkmgr

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"idcfs/proto"
	"idcfs/vchan"
	"idcfs/vchan/heap"
)

// FuzzLinkStream feeds arbitrary bytes, as dom 2's side of a link, to the
// link reader of a Manager in dom 1 (ring server, listener on port 5). The
// link must never panic, never hang, and tear down cleanly: every accepted
// connection ends (EOF or ErrReset) and Manager.Close returns.
func FuzzLinkStream(f *testing.F) {
	hello := hello(2)
	seeds := [][]byte{
		hello,
		append(append([]byte{}, hello...), proto.ConnectReq{DstPort: 5, Window: 1 << 16}.AppendFrame(nil, 2)...),
		concat(hello,
			proto.ConnectReq{DstPort: 5, Window: 1 << 16}.AppendFrame(nil, 2),
			proto.Data{Payload: []byte("hello")}.AppendFrame(nil, 2),
			proto.Credit{BufAlloc: 1 << 16, FwdCnt: 0}.AppendFrame(nil, 2),
			proto.Shutdown{How: proto.ShutWrite}.AppendFrame(nil, 2),
			proto.Disconnect{Reason: proto.ReasonReset}.AppendFrame(nil, 2)),
		concat(hello,
			proto.ConnectReq{DstPort: 6, Window: 10}.AppendFrame(nil, 4),
			proto.ConnectReq{DstPort: 5, Window: 10}.AppendFrame(nil, 6),
			proto.Data{Payload: make([]byte, 300)}.AppendFrame(nil, 6),
			proto.ConnectRsp{Status: proto.StatusAccepted}.AppendFrame(nil, 1),
			proto.Disconnect{}.AppendFrame(nil, 0)),
		concat(hello, rawHeader(4, 2, 0xffffff)),
		concat(hello, hello),
		{1, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				panic("link stream hung:\n" + string(buf))
			}
		}()
		host := heap.New()
		log, _ := newTestLog(t)
		log.Logger.Level = 0 // panic level only: fuzzing is noisy
		m, err := New(context.Background(), Config{
			Self: 1, Backend: host.Domain(1), Log: log,
			ConnectTimeout: 200 * time.Millisecond, Window: 1000,
		})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := m.Listen(5, 4)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := vchan.NewServer(host.Domain(1), 2, 4096, 4096)
		if err != nil {
			t.Fatal(err)
		}
		cli, err := vchan.NewClient(host.Domain(2), 1, srv.RingRef(), srv.Port())
		if err != nil {
			t.Fatal(err)
		}
		l := newLink(m, 2, roleServer)
		m.mu.Lock()
		m.publishLinkLocked(2, l)
		m.all[l] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go func() {
			defer m.wg.Done()
			defer m.forget(l)
			m.runStarted(l, srv)
		}()

		var wg sync.WaitGroup
		wg.Add(2)
		go func() { // the peer reads whatever dom 1 sends
			defer wg.Done()
			io.Copy(io.Discard, cli)
		}()
		go func() { // dom 1's application: accept and read everything
			defer wg.Done()
			for {
				c, err := ln.Accept(context.Background())
				if err != nil {
					return
				}
				_, err = io.ReadAll(c)
				if err != nil && !errors.Is(err, ErrReset) && !errors.Is(err, netErrClosed) {
					t.Errorf("read on a fuzzed connection: %v", err)
				}
				c.Close()
			}
		}()
		cli.Write(stream) // fails once dom 1 drops the link
		cli.Close()       // end of the peer: the link must go down
		<-l.dead
		ln.Close()
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
	})
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}
