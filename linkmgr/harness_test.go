package linkmgr

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr/xenstore"
	"idcfs/linkmgr/xenstored"
	"idcfs/vchan"
	"idcfs/vchan/heap"
)

// testLogger sends log lines to t.Log while the test runs and drops them
// afterwards. It also keeps the lines for tests that assert on them.
type testLogger struct {
	mu    sync.Mutex
	t     testing.TB
	done  bool
	lines []string
}

func (w *testLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	line := strings.TrimRight(string(p), "\n")
	w.lines = append(w.lines, line)
	if !w.done {
		w.t.Log(line)
	}
	return len(p), nil
}

func (w *testLogger) has(substr string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

// hasAll reports whether one line contains every one of substrs.
func (w *testLogger) hasAll(substrs ...string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		all := true
		for _, s := range substrs {
			if !strings.Contains(l, s) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func newTestLog(t testing.TB) (*logrus.Entry, *testLogger) {
	w := &testLogger{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	l := logrus.New()
	l.Out = w
	l.Level = logrus.InfoLevel
	if _, bench := t.(*testing.B); bench {
		l.Level = logrus.WarnLevel
	} else if testing.Verbose() {
		l.Level = logrus.DebugLevel
	}
	l.Formatter = &logrus.TextFormatter{DisableTimestamp: true}
	return logrus.NewEntry(l), w
}

// checkLeaks fails the test if goroutines started during it are still
// running once every cleanup registered after it has run.
func checkLeaks(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines leaked (%d before, %d after):\n%s", n-before, before, n, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// testHost is a simulated Xen host: one heap backend, one embedded
// Xenstore with a socket per domain, and the domains set up for idcfs.
type testHost struct {
	t    testing.TB
	heap *heap.Host
	xsd  *xenstored.Server
	dir  string
	dom0 *xenstore.Client
	log  *logrus.Entry
	logw *testLogger
}

func newTestHost(t testing.TB, setup []vchan.DomID, others ...vchan.DomID) *testHost {
	t.Helper()
	log, logw := newTestLog(t)
	dir, err := os.MkdirTemp("", "idcxs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &testHost{t: t, heap: heap.New(), xsd: xenstored.New(log.WithField("backend", "xenstored")), dir: dir, log: log, logw: logw}
	t.Cleanup(func() { h.xsd.Close() })
	if err := h.xsd.Listen(filepath.Join(dir, "0"), 0); err != nil {
		t.Fatal(err)
	}
	h.dom0 = h.client(0)
	for _, d := range append(append([]vchan.DomID{}, setup...), others...) {
		if d == 0 {
			continue
		}
		h.addDomain(d)
	}
	if len(setup) > 0 {
		if err := Setup(context.Background(), h.dom0, setup); err != nil {
			t.Fatalf("Setup: %v", err)
		}
	}
	return h
}

func (h *testHost) addDomain(d vchan.DomID) {
	h.t.Helper()
	if err := h.xsd.IntroduceDomain(uint32(d)); err != nil {
		h.t.Fatal(err)
	}
	if err := h.xsd.Listen(filepath.Join(h.dir, fmt.Sprint(d)), uint32(d)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *testHost) client(d vchan.DomID) *xenstore.Client {
	h.t.Helper()
	c, err := xenstore.Dial(filepath.Join(h.dir, fmt.Sprint(d)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// manager starts the idcfs daemon's link manager of domain d.
func (h *testHost) manager(d vchan.DomID, mod ...func(*Config)) *Manager {
	h.t.Helper()
	cfg := Config{
		Self:     d,
		Backend:  h.heap.Domain(d),
		Xenstore: h.client(d),
		Log:      h.log.WithField("test_dom", d),
	}
	for _, f := range mod {
		f(&cfg)
	}
	m, err := New(context.Background(), cfg)
	if err != nil {
		h.t.Fatalf("New(dom %d): %v", d, err)
	}
	h.t.Cleanup(func() { m.Close() })
	return m
}

// connectedPair starts the link managers of dom 1 and dom 2 and returns
// one connection between them: c dialled by dom 2, s accepted on port 1 of
// dom 1.
func connectedPair(t *testing.T) (h *testHost, c, s *Conn) {
	t.Helper()
	h = newTestHost(t, []vchan.DomID{1, 2})
	m1 := h.manager(1)
	m2 := h.manager(2)
	ln, err := m1.Listen(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 10*time.Second)
	if c, err = m2.Dial(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	if s, err = ln.Accept(ctx); err != nil {
		t.Fatal(err)
	}
	return h, c, s
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var netErrClosed = net.ErrClosed
