package heap_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"testing"
	"time"

	"idcfs/vchan"
	"idcfs/vchan/heap"
)

const (
	a vchan.DomID = 1
	b vchan.DomID = 2
	c vchan.DomID = 3
)

func TestShareMapSameMemory(t *testing.T) {
	h := heap.New()
	m, err := h.Domain(a).Share(b, 3)
	if err != nil {
		t.Fatal(err)
	}
	refs := m.Refs()
	if len(refs) != 3 || len(m.Bytes()) != 3*vchan.PageSize {
		t.Fatalf("share: %d refs, %d bytes", len(refs), len(m.Bytes()))
	}
	for i, r := range refs {
		if r == 0 || (i > 0 && r != refs[i-1]+1) {
			t.Fatalf("refs %v are not sequential and non-zero", refs)
		}
	}
	for _, x := range m.Bytes() {
		if x != 0 {
			t.Fatal("shared pages not zeroed")
		}
	}
	mp, err := h.Domain(b).Map(a, refs[1:], true)
	if err != nil {
		t.Fatal(err)
	}
	if len(mp.Bytes()) != 2*vchan.PageSize {
		t.Fatalf("mapped %d bytes", len(mp.Bytes()))
	}
	m.Bytes()[vchan.PageSize+7] = 42 // page 1 of the share is page 0 of the map
	if mp.Bytes()[7] != 42 {
		t.Fatal("Map did not return the shared memory")
	}
	mp.Bytes()[vchan.PageSize] = 43
	if m.Bytes()[2*vchan.PageSize] != 43 {
		t.Fatal("writes through the mapping are not visible to the sharer")
	}
	// Next share continues the sequence.
	m2, _ := h.Domain(a).Share(b, 1)
	if m2.Refs()[0] != refs[2]+1 {
		t.Fatalf("next ref %d, want %d", m2.Refs()[0], refs[2]+1)
	}
}

func TestMapErrors(t *testing.T) {
	h := heap.New()
	m1, _ := h.Domain(a).Share(b, 2)
	m2, _ := h.Domain(a).Share(b, 1)
	r1, r2 := m1.Refs(), m2.Refs()
	tests := []struct {
		name  string
		dom   vchan.DomID
		owner vchan.DomID
		refs  []uint32
		err   error
	}{
		{"not the named peer", c, a, r1, heap.ErrBadGrant},
		{"wrong owner", b, c, r1, heap.ErrBadGrant},
		{"unknown ref", b, a, []uint32{999}, heap.ErrBadGrant},
		{"ref 0", b, a, []uint32{0}, heap.ErrBadGrant},
		{"reversed", b, a, []uint32{r1[1], r1[0]}, heap.ErrNotContiguous},
		{"across shares", b, a, []uint32{r1[1], r2[0]}, heap.ErrNotContiguous},
		{"repeated", b, a, []uint32{r1[0], r1[0]}, heap.ErrNotContiguous},
		{"empty", b, a, nil, heap.ErrInvalid},
		{"sharer maps own grant", a, a, r1, heap.ErrBadGrant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := h.Domain(tt.dom).Map(tt.owner, tt.refs, true)
			if !errors.Is(err, tt.err) || m != nil {
				t.Fatalf("Map = %v, %v; want %v", m, err, tt.err)
			}
		})
	}
	if _, err := h.Domain(a).Share(b, 0); !errors.Is(err, heap.ErrInvalid) {
		t.Fatalf("Share(0) = %v", err)
	}
	if _, err := h.Domain(a).Share(b, heap.MaxShare+1); !errors.Is(err, heap.ErrInvalid) {
		t.Fatalf("Share(MaxShare+1) = %v", err)
	}
}

func TestRevokeOnClose(t *testing.T) {
	h := heap.New()
	m, _ := h.Domain(a).Share(b, 1)
	mp, err := h.Domain(b).Map(a, m.Refs(), false)
	if err != nil {
		t.Fatal(err)
	}
	m.Bytes()[0] = 9
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Domain(b).Map(a, m.Refs(), false); !errors.Is(err, heap.ErrBadGrant) {
		t.Fatalf("Map after the sharer closed = %v", err)
	}
	if mp.Bytes()[0] != 9 {
		t.Fatal("existing mapping lost its memory")
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func bindPair(t *testing.T, h *heap.Host) (srv, cli vchan.EventChannel) {
	t.Helper()
	srv, err := h.Domain(a).AllocUnbound(b)
	if err != nil {
		t.Fatal(err)
	}
	cli, err = h.Domain(b).Bind(a, srv.Port())
	if err != nil {
		t.Fatal(err)
	}
	return srv, cli
}

func pending(ch vchan.EventChannel) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	return ch.Wait(ctx) == nil
}

func TestEvents(t *testing.T) {
	h := heap.New()
	srv, err := h.Domain(a).AllocUnbound(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Notify(); err != nil { // unbound: dropped, as on Xen
		t.Fatalf("Notify on an unbound port = %v", err)
	}
	if _, err := h.Domain(c).Bind(a, srv.Port()); !errors.Is(err, heap.ErrBadPort) {
		t.Fatalf("Bind by a domain the port was not for = %v", err)
	}
	cli, err := h.Domain(b).Bind(a, srv.Port())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Domain(b).Bind(a, srv.Port()); !errors.Is(err, heap.ErrBadPort) {
		t.Fatalf("second Bind = %v", err)
	}
	if !pending(cli) {
		t.Fatal("a freshly bound port has no pending event")
	}
	if pending(srv) || pending(cli) {
		t.Fatal("spurious event")
	}
	// Events coalesce: three notifies, one wake-up.
	for range 3 {
		if err := cli.Notify(); err != nil {
			t.Fatal(err)
		}
	}
	if !pending(srv) {
		t.Fatal("event lost")
	}
	if pending(srv) {
		t.Fatal("events did not coalesce")
	}
	srv.Notify()
	if !pending(cli) {
		t.Fatal("event to the binding side lost")
	}
	// Closing one end wakes its waiter and unbinds the other.
	waiting := make(chan error, 1)
	go func() { waiting <- cli.Wait(context.Background()) }()
	time.Sleep(5 * time.Millisecond)
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Wait across Close = %v", err)
	}
	if err := cli.Notify(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Notify after Close = %v", err)
	}
	if err := cli.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	// The server's port is unbound again: the same peer may bind it anew.
	cli2, err := h.Domain(b).Bind(a, srv.Port())
	if err != nil {
		t.Fatalf("rebind after the client closed: %v", err)
	}
	pending(cli2)
	srv.Notify()
	if !pending(cli2) {
		t.Fatal("event after rebind lost")
	}
}

func TestUnmapNotify(t *testing.T) {
	h := heap.New()
	srv, cli := bindPair(t, h)
	pending(cli) // the bind event
	m, _ := h.Domain(a).Share(b, 1)
	mp, _ := h.Domain(b).Map(a, m.Refs(), true)
	copy(m.Bytes()[20:24], []byte{1, 1, 1, 1})
	if err := mp.SetUnmapNotify(20, cli); err != nil {
		t.Fatal(err)
	}
	if err := mp.SetUnmapNotify(21, cli); !errors.Is(err, heap.ErrInvalid) {
		t.Fatalf("second notify = %v", err)
	}
	if err := m.SetUnmapNotify(vchan.PageSize, srv); !errors.Is(err, heap.ErrInvalid) {
		t.Fatalf("notify past the mapping = %v", err)
	}
	if err := m.SetUnmapNotify(21, srv); err != nil {
		t.Fatal(err)
	}
	mp.Close()
	if got := m.Bytes()[20:24]; got[0] != 0 || got[1] != 1 || got[2] != 1 || got[3] != 1 {
		t.Fatalf("after the client's unmap: % x, want 00 01 01 01", got)
	}
	if !pending(srv) {
		t.Fatal("unmap notify sent no event")
	}
	m.Close()
	if got := m.Bytes()[21]; got != 0 {
		t.Fatalf("server's unmap left byte 21 = %d", got)
	}
	if !pending(cli) {
		t.Fatal("server unmap notify sent no event")
	}
}

func TestKill(t *testing.T) {
	h := heap.New()
	srv, cli := bindPair(t, h)
	pending(cli)
	m, _ := h.Domain(a).Share(b, 1)
	mp, _ := h.Domain(b).Map(a, m.Refs(), true)
	m.Bytes()[20] = 1
	mp.SetUnmapNotify(20, cli)
	h.Kill(b)
	if m.Bytes()[20] != 0 {
		t.Fatal("Kill did not fire the unmap notify")
	}
	if !pending(srv) {
		t.Fatal("Kill sent no event")
	}
	if err := cli.Wait(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dead domain's port Wait = %v", err)
	}
	// The survivor's port is unbound again; the grant is still there.
	if _, err := h.Domain(b).Map(a, m.Refs(), true); err != nil {
		t.Fatalf("grant gone after the mapper died: %v", err)
	}
}

func TestStore(t *testing.T) {
	st := heap.NewStore()
	ctx := context.Background()
	if err := st.Publish(ctx, "/x/5/1", b, 7, 8); err != nil {
		t.Fatal(err)
	}
	st.Publish(ctx, "/x/5/10", b, 9, 10)
	st.Publish(ctx, "/x/50", b, 11, 12)
	if ref, port, err := st.Lookup(ctx, "/x/5/1"); ref != 7 || port != 8 || err != nil {
		t.Fatalf("Lookup = %d, %d, %v", ref, port, err)
	}
	if err := st.Remove(ctx, "/x/5"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Lookup(ctx, "/x/5/10"); !errors.Is(err, heap.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Lookup after Remove of the parent = %v", err)
	}
	if st.Len() != 1 {
		t.Fatalf("Remove of /x/5 took %d paths, not only those below it", 3-st.Len())
	}
	if err := st.Publish(ctx, "", b, 1, 1); !errors.Is(err, heap.ErrInvalid) {
		t.Fatalf("Publish of an empty path = %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := st.Lookup(cancelled, "/x/50"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lookup with a cancelled context = %v", err)
	}
}
