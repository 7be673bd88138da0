package xenstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr/xenstore"
	"idcfs/linkmgr/xenstored"
)

// The client suite runs against the embedded store, or against a real
// xenstored when IDCFS_XENSTORE_REAL=1 and XENSTORED_PATH names its socket
// (or the xenbus device). Against a real store, the tests that need
// per-domain connections or the domain life-cycle API are skipped.

func realStore() (string, bool) {
	p := os.Getenv("XENSTORED_PATH")
	return p, p != "" && os.Getenv("IDCFS_XENSTORE_REAL") == "1"
}

// testWriter sends log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(testWriter{t})
	if testing.Verbose() {
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

var baseSeq atomic.Uint64

// env is one test's store: a privileged client and a base path the test
// owns.
type env struct {
	t    *testing.T
	priv *xenstore.Client
	base string
	srv  *xenstored.Server // nil against a real store
	dir  string
}

func (e *env) real() bool { return e.srv == nil }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t}
	if p, ok := realStore(); ok {
		c, err := xenstore.Dial(p)
		if err != nil {
			t.Fatalf("IDCFS_XENSTORE_REAL=1 but cannot dial XENSTORED_PATH=%s: %v", p, err)
		}
		e.priv = c
		e.base = fmt.Sprintf("/idcfs-test/p%d-n%d", os.Getpid(), baseSeq.Add(1))
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.Rm(ctx, e.base); err != nil && !errors.Is(err, net.ErrClosed) {
				t.Logf("cleanup rm %s: %v", e.base, err)
			}
			c.Close()
		})
	} else {
		checkLeaks(t)
		e.srv = xenstored.New(testLogger(t))
		e.dir = t.TempDir()
		t.Cleanup(func() {
			if err := e.srv.Close(); err != nil {
				t.Errorf("server close: %v", err)
			}
		})
		e.priv = e.dial(0)
		e.base = "/idcfs-test"
	}
	if err := e.priv.Mkdir(ctxT(t), e.base); err != nil {
		t.Fatalf("mkdir %s: %v", e.base, err)
	}
	return e
}

// p returns an absolute path below the test's base.
func (e *env) p(rel string) string { return e.base + "/" + rel }

// needEmbedded skips a test that needs per-domain sockets or the domain
// life-cycle API.
func (e *env) needEmbedded() {
	e.t.Helper()
	if e.real() {
		e.t.Skip("needs the embedded store (per-domain sockets or IntroduceDomain/ReleaseDomain); unset IDCFS_XENSTORE_REAL to run it")
	}
}

// dial opens a client connection speaking for domain dom on its own socket.
func (e *env) dial(dom uint32) *xenstore.Client {
	e.t.Helper()
	e.needEmbedded()
	path := filepath.Join(e.dir, fmt.Sprintf("dom%d-%d.sock", dom, baseSeq.Add(1)))
	if err := e.srv.Listen(path, dom); err != nil {
		e.t.Fatalf("listen for dom%d: %v", dom, err)
	}
	c, err := xenstore.Dial(path)
	if err != nil {
		e.t.Fatalf("dial dom%d: %v", dom, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// domain introduces dom and returns a client speaking for it.
func (e *env) domain(dom uint32) *xenstore.Client {
	e.t.Helper()
	e.needEmbedded()
	if err := e.srv.IntroduceDomain(dom); err != nil {
		e.t.Fatalf("introduce %d: %v", dom, err)
	}
	return e.dial(dom)
}

// checkLeaks fails the test if goroutines started during it are still
// running shortly after it (and its cleanups) finished.
func checkLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// mustErrno checks that err unwraps to want and is a *xenstore.Error.
func mustErrno(t *testing.T, err error, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
	var xe *xenstore.Error
	if !errors.As(err, &xe) {
		t.Fatalf("error %v (%T) is not a *xenstore.Error", err, err)
	}
}

// nextEvent waits for one event.
func nextEvent(t *testing.T, w *xenstore.Watch) xenstore.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("watch %s: events channel closed", w.Path())
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("watch %s: no event within 5s", w.Path())
	}
	return xenstore.Event{}
}

// expectEvents checks that the next events of w are exactly want, in order.
func expectEvents(t *testing.T, w *xenstore.Watch, want ...string) {
	t.Helper()
	for _, p := range want {
		ev := nextEvent(t, w)
		if ev.Path != p || ev.Token != w.Token() {
			t.Fatalf("event %+v, want path %q token %q", ev, p, w.Token())
		}
	}
}

// noEvent checks that w has no event pending for a short while.
func noEvent(t *testing.T, w *xenstore.Watch) {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if ok {
			t.Fatalf("unexpected event %+v", ev)
		}
	case <-time.After(100 * time.Millisecond):
	}
}
