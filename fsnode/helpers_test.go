package fsnode

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr"
	"idcfs/linkmgr/xenstore"
	"idcfs/linkmgr/xenstored"
	"idcfs/vchan"
	"idcfs/vchan/heap"
)

// testLog returns a logger that writes to t.Log while the test runs and
// drops lines after it ended (go-fuse's log pipe may still flush one).
func testLog(t *testing.T) *logrus.Entry {
	t.Helper()
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	l := logrus.New()
	l.SetOutput(w)
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l)
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// newLoopManager returns a Manager for domain dom on an in-process heap
// backend without Xenstore: it reaches only itself (loopback).
func newLoopManager(t *testing.T, dom vchan.DomID) *linkmgr.Manager {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m, err := linkmgr.New(ctx, linkmgr.Config{
		Self:    dom,
		Backend: heap.New().Domain(dom),
		Log:     testLog(t).WithField("domid", dom),
	})
	if err != nil {
		t.Fatalf("linkmgr.New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// testHost simulates a Xen host: one heap backend for all domains and an
// embedded Xenstore with a socket per domain, set up for idcfs.
type testHost struct {
	t    *testing.T
	heap *heap.Host
	dir  string
	xsd  *xenstored.Server
}

// newTestHost introduces doms to a fresh Xenstore and runs linkmgr.Setup
// for them.
func newTestHost(t *testing.T, doms ...vchan.DomID) *testHost {
	t.Helper()
	log := testLog(t)
	h := &testHost{t: t, heap: heap.New(), dir: t.TempDir(), xsd: xenstored.New(log.WithField("backend", "xenstored"))}
	t.Cleanup(func() { h.xsd.Close() })
	if err := h.xsd.Listen(filepath.Join(h.dir, "0"), 0); err != nil {
		t.Fatal(err)
	}
	for _, d := range doms {
		if err := h.xsd.IntroduceDomain(uint32(d)); err != nil {
			t.Fatal(err)
		}
		if err := h.xsd.Listen(filepath.Join(h.dir, strconv.Itoa(int(d))), uint32(d)); err != nil {
			t.Fatal(err)
		}
	}
	if err := linkmgr.Setup(context.Background(), h.client(0), doms); err != nil {
		t.Fatalf("linkmgr.Setup: %v", err)
	}
	return h
}

func (h *testHost) client(d vchan.DomID) *xenstore.Client {
	h.t.Helper()
	c, err := xenstore.Dial(filepath.Join(h.dir, strconv.Itoa(int(d))))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// manager starts the link manager of domain d.
func (h *testHost) manager(d vchan.DomID) *linkmgr.Manager {
	h.t.Helper()
	m, err := linkmgr.New(context.Background(), linkmgr.Config{
		Self:     d,
		Backend:  h.heap.Domain(d),
		Xenstore: h.client(d),
		Log:      testLog(h.t).WithField("domid", d),
	})
	if err != nil {
		h.t.Fatalf("linkmgr.New(%d): %v", d, err)
	}
	h.t.Cleanup(func() { m.Close() })
	return m
}
