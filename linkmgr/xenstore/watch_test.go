package xenstore_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
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
			// Removing a subtree fires once for a watch above it, naming
			// the removed node; the nodes below it fire only watches on
			// exactly their paths (TestWatchRemoval).
			if err := wc.Rm(ctx, root+"/b"); err != nil {
				t.Fatal(err)
			}
			if err := wc.Write(ctx, root+"/end", ""); err != nil {
				t.Fatal(err)
			}
			expectEvents(t, w, root+"/b", root+"/end")
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

// TestWatchRemovedAncestor: a watch on a path where no node exists gets no
// event when an ancestor is removed. xenstored fires the nodes it removes,
// and the one below the removed node only for watches on exactly its path.
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
	// Creating the watched node fires it: that must be the first event.
	if err := c.Write(ctx, e.p("r/x/y/z"), ""); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, w, e.p("r/x/y/z"))
	noEvent(t, w)
}

// removalCase is one removal and the events it must fire. Paths are
// relative to the case's own directory; "" is that directory.
type removalCase struct {
	name string
	rm   string // the node removed
	// inTx removes in a transaction, after before (if set) ran in it.
	inTx   bool
	before func(ctx context.Context, tx *xenstore.Tx, dir string) error
	// byOther removes through another connection than the watcher's.
	byOther bool
	// watches maps each watched path to the events the removal fires for
	// it, in order.
	watches map[string][]string
}

// runRemoval registers the case's watches on watcher below dir (built by
// build), removes through remover, and checks each watch's events: exactly
// the expected ones, then the barriers. A barrier is a node written (by
// barrier) below one watched path after the removal; every watch sees at
// least its own, so no event of the removal can come late unnoticed.
func runRemoval(t *testing.T, watcher, remover *xenstore.Client, dir string, build func(dir string) error, rc removalCase, barrier func(path string) error) {
	t.Helper()
	ctx := ctxT(t)
	abs := func(rel string) string {
		if rel == "" {
			return dir
		}
		return dir + "/" + rel
	}
	if err := build(dir); err != nil {
		t.Fatal(err)
	}
	paths := slices.Sorted(maps.Keys(rc.watches))
	ws := make([]*xenstore.Watch, len(paths))
	for i, p := range paths {
		w, err := watcher.Watch(ctx, abs(p), "rm:"+p)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		expectEvents(t, w, abs(p))
		ws[i] = w
	}
	if rc.inTx {
		err := remover.Transaction(ctx, func(tx *xenstore.Tx) error {
			if rc.before != nil {
				if err := rc.before(ctx, tx, dir); err != nil {
					return err
				}
			}
			return tx.Rm(ctx, abs(rc.rm))
		})
		if err != nil {
			t.Fatal(err)
		}
	} else if err := remover.Rm(ctx, abs(rc.rm)); err != nil {
		t.Fatal(err)
	}
	var barriers []string
	for _, p := range paths {
		b := abs(p) + "/zz-barrier"
		if err := barrier(b); err != nil {
			t.Fatal(err)
		}
		barriers = append(barriers, b)
	}
	for i, p := range paths {
		var want []string
		for _, ev := range rc.watches[p] {
			want = append(want, abs(ev))
		}
		for _, b := range barriers {
			if b == abs(p) || strings.HasPrefix(b, abs(p)+"/") {
				want = append(want, b)
			}
		}
		for _, wp := range want {
			if ev := nextEvent(t, ws[i]); ev.Path != wp {
				t.Fatalf("watch %s: event %s, want %s (all expected: %q)", abs(p), ev.Path, wp, want)
			}
		}
	}
}

// TestWatchRemoval checks which watches a removal fires, naming which path,
// as Xen 4.17's xenstored does (rm_node walks the removed subtree children
// first and fires each node from delnode_sub): the removed node fires the
// watches on it and on its ancestors, once each, naming itself; each node
// removed below it fires only the watches on exactly its path; a watch on a
// path below it where no node existed gets nothing. In a transaction the
// same events fire at commit, one per node, in the order the transaction
// first accessed the nodes; a node it changed before removing it fires the
// watches on its ancestors too (queue_watches keeps the wider match).
func TestWatchRemoval(t *testing.T) {
	e := newEnv(t)
	// d/n = "n" with n/a/b and n/l below it, and d/s beside it.
	build := func(dir string) error {
		ctx := ctxT(t)
		for _, kv := range [][2]string{{"n", "n"}, {"n/a/b", "b"}, {"n/l", "l"}, {"s", "s"}} {
			if err := e.priv.Write(ctx, dir+"/"+kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	}
	subtree := map[string][]string{
		"n":          {"n"},     // the removed node itself
		"":           {"n"},     // an ancestor: once, for the removed node only
		"n/a":        {"n/a"},   // a node below that existed
		"n/a/b":      {"n/a/b"}, // one deeper
		"n/l":        {"n/l"},
		"n/a/b/none": nil, // below, where no node existed
		"n/x/y":      nil,
		"s":          nil, // beside it
	}
	tests := []removalCase{
		{name: "leaf", rm: "n/l", watches: map[string][]string{
			"n/l":   {"n/l"}, // the removed node itself
			"n":     {"n/l"}, // its parent
			"":      {"n/l"}, // an ancestor further up
			"n/l/x": nil,     // below it, where no node existed
			"n/a":   nil,     // a sibling
		}},
		{name: "subtree", rm: "n", watches: subtree},
		{name: "subtree by another connection", rm: "n", byOther: true, watches: subtree},
		{name: "subtree in a transaction", rm: "n", inTx: true, watches: subtree},
		{name: "transaction writes below, then removes the subtree", rm: "n", inTx: true,
			before: func(ctx context.Context, tx *xenstore.Tx, dir string) error {
				return tx.Write(ctx, dir+"/n/a", "2")
			},
			watches: map[string][]string{
				"":           {"n/a", "n"},
				"n":          {"n/a", "n"},
				"n/a":        {"n/a"},
				"n/a/b":      {"n/a/b"},
				"n/l":        {"n/l"},
				"n/a/b/none": nil,
			}},
		{name: "transaction creates below, then removes the subtree", rm: "n", inTx: true,
			before: func(ctx context.Context, tx *xenstore.Tx, dir string) error {
				return tx.Write(ctx, dir+"/n/new", "x")
			},
			watches: map[string][]string{
				// A node that exists neither before nor after the
				// transaction fires nothing.
				"n/new": nil,
				"":      {"n"},
				"n/a":   {"n/a"},
			}},
	}
	for i, rc := range tests {
		t.Run(rc.name, func(t *testing.T) {
			ctx := ctxT(t)
			remover := e.priv
			if rc.byOther {
				remover = e.otherPriv()
			}
			barrier := func(p string) error { return e.priv.Write(ctx, p, "") }
			runRemoval(t, e.priv, remover, e.p(fmt.Sprintf("rm%d", i)), build, rc, barrier)
		})
	}
}

// TestWatchRemovalPermissions: a guest's watch gets a removal event only
// for a node the guest may read, or whose parent it may read, with the
// permissions as they were before the removal (watch_permitted, called
// while the node is still at hand). A removal in a transaction fires at
// commit, when the node is gone: only the permissions the node had when the
// transaction first accessed it count, not its parent's.
func TestWatchRemovalPermissions(t *testing.T) {
	e := newEnv(t)
	e.needEmbedded()
	guest := e.domain(1)
	none, read := []xenstore.Perm{{Dom: 0}}, []xenstore.Perm{{Dom: 0}, {Dom: 1, Read: true}}
	// d (unreadable for dom1) holds n (unreadable) with n/a (readable),
	// n/a/b (unreadable, readable parent) and n/l (unreadable, unreadable
	// parent), and r (readable) with r/c (unreadable, readable parent).
	build := func(dir string) error {
		ctx := ctxT(t)
		for _, np := range []struct {
			path  string
			perms []xenstore.Perm
		}{{"", none}, {"n", none}, {"n/a", read}, {"n/a/b", none}, {"n/l", none}, {"r", read}, {"r/c", none}} {
			p := dir
			if np.path != "" {
				p += "/" + np.path
			}
			if err := e.priv.Write(ctx, p, ""); err != nil {
				return err
			}
			if err := e.priv.SetPerms(ctx, p, np.perms); err != nil {
				return err
			}
		}
		return nil
	}
	tests := []removalCase{
		{name: "unreadable subtree", rm: "n", watches: map[string][]string{
			"":      nil, // n and d are unreadable
			"n":     nil,
			"n/a":   {"n/a"},   // readable
			"n/a/b": {"n/a/b"}, // its parent n/a is readable
			"n/l":   nil,
		}},
		{name: "unreadable subtree in a transaction", rm: "n", inTx: true, watches: map[string][]string{
			"":      nil,
			"n":     nil,
			"n/a":   {"n/a"},
			"n/a/b": nil, // gone at commit: its parent no longer counts
			"n/l":   nil,
		}},
		{name: "readable node", rm: "r", watches: map[string][]string{
			"":    {"r"},
			"r":   {"r"},
			"r/c": {"r/c"}, // its parent r is readable
		}},
		{name: "readable node in a transaction", rm: "r", inTx: true, watches: map[string][]string{
			"":    {"r"},
			"r":   {"r"},
			"r/c": nil,
		}},
		{name: "unreadable node, readable parent", rm: "r/c", watches: map[string][]string{
			"":    {"r/c"}, // delivery is decided per connection, not per watch
			"r":   {"r/c"},
			"r/c": {"r/c"},
		}},
		{name: "unreadable node, readable parent, in a transaction", rm: "r/c", inTx: true, watches: map[string][]string{
			"":    nil, // the parent still exists, but does not count
			"r":   nil,
			"r/c": nil,
		}},
	}
	for i, rc := range tests {
		t.Run(rc.name, func(t *testing.T) {
			ctx := ctxT(t)
			// A barrier readable by dom1, written in one transaction so
			// that it fires once, with its final permissions.
			barrier := func(p string) error {
				return e.priv.Transaction(ctx, func(tx *xenstore.Tx) error {
					if err := tx.Write(ctx, p, ""); err != nil {
						return err
					}
					return tx.SetPerms(ctx, p, read)
				})
			}
			runRemoval(t, guest, e.priv, e.p(fmt.Sprintf("perm%d", i)), build, rc, barrier)
		})
	}
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
	// The server closes the port. dom2 may read neither the port nor its
	// parent, and the keys below it fire only watches on exactly their
	// paths (TestWatchRemoval): no event for the watch on the port. A
	// watch on a key itself sees the key go.
	rw, err := cli.Watch(ctx, port+"/ring-ref", "ring-ref")
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	expectEvents(t, rw, port+"/ring-ref")
	if err := srv.Rm(ctx, "data/vchan/2/7"); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, rw, port+"/ring-ref")
	noEvent(t, w)
	noEvent(t, rw)
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
