package xenstore_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"idcfs/linkmgr/xenstore"
)

// TestWatchFiresOncePerChange checks, change by change, that a watch gets
// exactly the expected events: each step ends by writing a barrier node
// below the watch, and the barrier's event must come right after the
// step's own events.
func TestWatchFiresOncePerChange(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.priv
	root := e.p("w")
	if err := c.Mkdir(ctx, root); err != nil {
		t.Fatal(err)
	}
	for _, writer := range []struct {
		name string
		c    *xenstore.Client
	}{{"same connection", c}, {"other connection", e.otherPriv()}} {
		t.Run(writer.name, func(t *testing.T) {
			w, err := c.Watch(ctx, root, "tok-"+writer.name)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			expectEvents(t, w, root) // the initial event
			wc := writer.c
			steps := []struct {
				name string
				do   func() error
				want []string
			}{
				{"create child", func() error { return wc.Write(ctx, root+"/a", "1") }, []string{root + "/a"}},
				{"overwrite", func() error { return wc.Write(ctx, root+"/a", "2") }, []string{root + "/a"}},
				{"same value again", func() error { return wc.Write(ctx, root+"/a", "2") }, []string{root + "/a"}},
				{"deep create", func() error { return wc.Write(ctx, root+"/b/c/d", "x") }, []string{root + "/b/c/d"}},
				{"mkdir new", func() error { return wc.Mkdir(ctx, root+"/m") }, []string{root + "/m"}},
				{"mkdir existing", func() error { return wc.Mkdir(ctx, root+"/m") }, nil},
				{"set perms", func() error { return wc.SetPerms(ctx, root+"/a", []xenstore.Perm{{Dom: 0, Read: true}}) }, []string{root + "/a"}},
				{"rm leaf", func() error { return wc.Rm(ctx, root+"/a") }, []string{root + "/a"}},
				{"rm missing", func() error { return wc.Rm(ctx, root+"/a") }, nil},
				{"write the watched node", func() error { return wc.Write(ctx, root, "v") }, []string{root}},
				{"outside the watch", func() error { return wc.Write(ctx, e.p("wx"), "v") }, nil},
				{"sibling with common prefix", func() error { return wc.Write(ctx, root+"x", "v") }, nil},
			}
			for i, st := range steps {
				if err := st.do(); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				barrier := fmt.Sprintf("%s/barrier%d", root, i)
				if err := wc.Write(ctx, barrier, ""); err != nil {
					t.Fatal(err)
				}
				expectEvents(t, w, append(st.want, barrier)...)
			}
			// Removing a subtree fires for every node removed.
			if err := wc.Rm(ctx, root+"/b"); err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for range 3 {
				got[nextEvent(t, w).Path]++
			}
			for _, p := range []string{root + "/b", root + "/b/c", root + "/b/c/d"} {
				if got[p] != 1 {
					t.Fatalf("events after rm of a subtree: %v", got)
				}
			}
			if err := wc.Write(ctx, root+"/end", ""); err != nil {
				t.Fatal(err)
			}
			expectEvents(t, w, root+"/end")
			if err := wc.Rm(ctx, root); err != nil {
				t.Fatal(err)
			}
			if err := wc.Mkdir(ctx, root); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// otherPriv returns a second privileged connection.
func (e *env) otherPriv() *xenstore.Client {
	e.t.Helper()
	if e.real() {
		p, _ := realStore()
		c, err := xenstore.Dial(p)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { c.Close() })
		return c
	}
	return e.dial(0)
}

func TestWatchRemovedAncestor(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.priv
	if err := c.Write(ctx, e.p("r/x/y"), "1"); err != nil {
		t.Fatal(err)
	}
	// A watch on a node that does not exist yet, below the removed one.
	w, err := c.Watch(ctx, e.p("r/x/y/z"), "below")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	expectEvents(t, w, e.p("r/x/y/z"))
	if err := c.Rm(ctx, e.p("r")); err != nil {
		t.Fatal(err)
	}
	// When an ancestor goes, the event names the watched path itself.
	expectEvents(t, w, e.p("r/x/y/z"))
	noEvent(t, w)
}

func TestWatchRegistration(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.priv
	w, err := c.Watch(ctx, e.p("reg"), "t1")
	if err != nil {
		t.Fatal(err)
	}
	expectEvents(t, w, e.p("reg"))
	_, err = c.Watch(ctx, e.p("reg"), "t1")
	mustErrno(t, err, syscall.EEXIST)
	// The same path with another token is another watch; both get events.
	w2, err := c.Watch(ctx, e.p("reg"), "t2")
	if err != nil {
		t.Fatal(err)
	}
	expectEvents(t, w2, e.p("reg"))
	// Two paths sharing a token: each watch gets only its own events.
	w3, err := c.Watch(ctx, e.p("other"), "t1")
	if err != nil {
		t.Fatal(err)
	}
	expectEvents(t, w3, e.p("other"))
	if err := c.Write(ctx, e.p("reg/k"), "v"); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, w, e.p("reg/k"))
	expectEvents(t, w2, e.p("reg/k"))
	noEvent(t, w3)

	if err := w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, ok := <-w.Events(); ok {
		t.Fatal("events channel open after Close")
	}
	if err := w.Close(); !errors.Is(err, xenstore.ErrWatchClosed) {
		t.Fatalf("second close: %v", err)
	}
	// After Close the pair may be registered again.
	w4, err := c.Watch(ctx, e.p("reg"), "t1")
	if err != nil {
		t.Fatal(err)
	}
	expectEvents(t, w4, e.p("reg"))
	for _, w := range []*xenstore.Watch{w2, w3, w4} {
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWatchSlowConsumerCoalesces(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.priv
	w, err := c.Watch(ctx, e.p("slow"), "s")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Nobody reads the events while many distinct changes happen; replies
	// must not be held up.
	n := xenstore.MaxQueuedEvents * 2
	for i := range n {
		if err := c.Write(ctx, e.p(fmt.Sprintf("slow/k%d", i)), "v"); err != nil {
			t.Fatal(err)
		}
	}
	// The queue collapsed into at most MaxQueuedEvents events, and the last
	// one queued is still delivered (no change goes unreported).
	count, last := 0, ""
	for {
		select {
		case ev := <-w.Events():
			count++
			last = ev.Path
			continue
		case <-time.After(200 * time.Millisecond):
		}
		break
	}
	if count == 0 || count > xenstore.MaxQueuedEvents+1 {
		t.Fatalf("got %d events for %d changes", count, n)
	}
	if want := e.p(fmt.Sprintf("slow/k%d", n-1)); last != want && last != e.p("slow") {
		t.Fatalf("last event %q, want %q or the watched path", last, want)
	}
}

func TestWatchSpecialDomainPaths(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.priv
	wi, err := c.Watch(ctx, xenstore.IntroduceDomain, "intro")
	if err != nil {
		t.Fatal(err)
	}
	defer wi.Close()
	wr, err := c.Watch(ctx, xenstore.ReleaseDomain, "rel")
	if err != nil {
		t.Fatal(err)
	}
	defer wr.Close()
	expectEvents(t, wi, xenstore.IntroduceDomain)
	expectEvents(t, wr, xenstore.ReleaseDomain)
	e.needEmbedded() // the rest starts and stops domains

	// An unprivileged domain may register, but gets no events unless dom0
	// grants read access on the special path.
	d1 := e.domain(1)
	expectEvents(t, wi, xenstore.IntroduceDomain)
	u, err := d1.Watch(ctx, xenstore.ReleaseDomain, "u")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	expectEvents(t, u, xenstore.ReleaseDomain)

	if err := e.srv.IntroduceDomain(7); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, wi, xenstore.IntroduceDomain)
	if err := e.srv.ReleaseDomain(7); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, wr, xenstore.ReleaseDomain)
	noEvent(t, u)

	if err := c.SetPerms(ctx, xenstore.ReleaseDomain, []xenstore.Perm{{Dom: 0}, {Dom: 1, Read: true}}); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.IntroduceDomain(8); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, wi, xenstore.IntroduceDomain)
	if err := e.srv.ReleaseDomain(8); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, wr, xenstore.ReleaseDomain)
	expectEvents(t, u, xenstore.ReleaseDomain)
	noEvent(t, wi)
	noEvent(t, wr)

	// The released domain's home is gone.
	if _, err := c.Read(ctx, "/local/domain/8"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("home after release: %v", err)
	}
}

// TestWatchPermissionFilter follows the vchan pattern: a client domain
// watches a server domain's port directory without any permission and
// receives events for exactly the nodes it may read.
func TestWatchPermissionFilter(t *testing.T) {
	e := newEnv(t)
	e.needEmbedded()
	ctx := ctxT(t)
	srv, cli := e.domain(1), e.domain(2)
	port := "/local/domain/1/data/vchan/2/7"
	w, err := cli.Watch(ctx, port, "vchan")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	expectEvents(t, w, port)

	// A node dom2 cannot read: no event.
	if err := srv.Write(ctx, "data/vchan/2/7/private", "p"); err != nil {
		t.Fatal(err)
	}
	// The vchan keys, written readable by dom2 in a transaction.
	err = srv.Transaction(ctx, func(tx *xenstore.Tx) error {
		for _, k := range []string{"ring-ref", "event-channel"} {
			if err := tx.Write(ctx, "data/vchan/2/7/"+k, "12"); err != nil {
				return err
			}
			if err := tx.SetPerms(ctx, "data/vchan/2/7/"+k, []xenstore.Perm{{Dom: 1}, {Dom: 2, Read: true}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// One event per key: a transaction fires once per node at commit, and
	// by then dom2 may read the keys.
	got := map[string]int{}
	for range 2 {
		got[nextEvent(t, w).Path]++
	}
	if got[port+"/ring-ref"] != 1 || got[port+"/event-channel"] != 1 {
		t.Fatalf("events: %v", got)
	}
	noEvent(t, w)
	if v, err := cli.Read(ctx, port+"/ring-ref"); err != nil || v != "12" {
		t.Fatalf("client reads ring-ref: %q, %v", v, err)
	}
	// The server closes the port: events for the readable leaves only.
	if err := srv.Rm(ctx, "data/vchan/2/7"); err != nil {
		t.Fatal(err)
	}
	got = map[string]int{}
	for range 2 {
		got[nextEvent(t, w).Path]++
	}
	if got[port+"/ring-ref"] != 1 || got[port+"/event-channel"] != 1 {
		t.Fatalf("events on removal: %v", got)
	}
	noEvent(t, w)
}

func TestWatchRelative(t *testing.T) {
	e := newEnv(t)
	e.needEmbedded()
	ctx := ctxT(t)
	d := e.domain(4)
	w, err := d.Watch(ctx, "data", "rel")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	expectEvents(t, w, "data")
	if err := d.Write(ctx, "data/x", "1"); err != nil {
		t.Fatal(err)
	}
	if err := e.priv.Write(ctx, "/local/domain/4/data/y", "1"); err != nil {
		t.Fatal(err)
	}
	// Events for a relative watch carry relative paths.
	expectEvents(t, w, "data/x", "data/y")
}

func TestWatchEventsClosedWithClient(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.otherPriv()
	w, err := c.Watch(ctx, e.p("c"), "c")
	if err != nil {
		t.Fatal(err)
	}
	expectEvents(t, w, e.p("c"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-w.Events():
		if ok {
			t.Fatal("event after client close")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("events channel not closed with the client")
	}
	if err := w.Close(); err != nil {
		t.Fatalf("watch close after client close: %v", err)
	}
}
