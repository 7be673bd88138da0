package vchan

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// testEvents is an EventChannel whose events the test sends by hand.
type testEvents struct{ sig chan struct{} }

func (c *testEvents) Port() uint32  { return 1 }
func (c *testEvents) Notify() error { return nil }
func (c *testEvents) Close() error  { return nil }
func (c *testEvents) Wait(ctx context.Context) error {
	select {
	case <-c.sig:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestBlockContract drives block on an endpoint without a watcher, with
// the periodic re-check off.
func TestBlockContract(t *testing.T) {
	ev := &testEvents{sig: make(chan struct{}, 1)}
	page := make([]byte, PageSize)
	if !aligned(page) {
		t.Skip("page buffer not aligned")
	}
	e := newEndpoint(false, 0, ev, nil, page)
	e.recheck = time.Hour
	defer e.rdDL.Stop()
	ctx := context.Background()
	block := func(seq uint64) error {
		return e.block(ctx, roleRead, seq, e.rdWake, e.rdTimer, e.rdDL, &e.rdCtx)
	}
	e.mark(roleRead)

	// An event received by another holder after the reader noted evSeq
	// may be the one it asked for: block returns at once to re-check
	// instead of waiting for a later event.
	seq := e.evSeq.Load()
	e.evMu.Lock()
	e.holder = roleWatch
	e.evMu.Unlock()
	e.release(roleWatch, e.wctx, nil)
	e.rdDL.Set(time.Now().Add(5 * time.Second))
	start := time.Now()
	if err := block(seq); err != nil || time.Since(start) > 2*time.Second {
		t.Fatalf("block after an event taken by another holder: %v after %v", err, time.Since(start))
	}

	// With no event taken since, block takes the role and receives the
	// next event itself.
	seq = e.evSeq.Load()
	go func() {
		time.Sleep(10 * time.Millisecond)
		ev.sig <- struct{}{}
	}()
	if err := block(seq); err != nil {
		t.Fatalf("block: %v", err)
	}
	if got := e.evSeq.Load(); got != seq+1 || e.holder != 0 {
		t.Fatalf("after the event: evSeq %d (want %d), holder %d", got, seq+1, e.holder)
	}

	// While another holder waits, block waits for that holder's wake.
	seq = e.evSeq.Load()
	e.evMu.Lock()
	e.holder = roleWrite
	e.evMu.Unlock()
	go func() {
		time.Sleep(10 * time.Millisecond)
		e.release(roleWrite, e.wctx, nil)
	}()
	if err := block(seq); err != nil {
		t.Fatalf("block behind another holder: %v", err)
	}

	// The deadline ends the holder's Wait.
	e.rdDL.Set(time.Now().Add(20 * time.Millisecond))
	if err := block(e.evSeq.Load()); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("block past the deadline: %v", err)
	}
	e.rdDL.Set(time.Time{})

	// So does the context, registered once for the role.
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(20*time.Millisecond, cancel)
	err := e.block(cctx, roleRead, e.evSeq.Load(), e.rdWake, e.rdTimer, e.rdDL, &e.rdCtx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("block with a cancelled context: %v", err)
	}
	e.unmark(roleRead)
	e.rdCtx.clear()
	if e.holder != 0 || e.waiting != 0 {
		t.Fatalf("holder %d, waiting %d at the end", e.holder, e.waiting)
	}
}
