package fsnode

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"idcfs/linkmgr"
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
	return m
}
