package xenstore_test

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"idcfs/linkmgr/xenstore"
)

func TestTransactionCommitAndAbort(t *testing.T) {
	e := newEnv(t)
	c, ctx := e.priv, ctxT(t)
	if err := c.Write(ctx, e.p("t/old"), "o"); err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Write(ctx, e.p("t/new"), "n"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rm(ctx, e.p("t/old")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Mkdir(ctx, e.p("t/dir")); err != nil {
		t.Fatal(err)
	}
	if err := tx.SetPerms(ctx, e.p("t/new"), []xenstore.Perm{{Dom: 0, Read: true}}); err != nil {
		t.Fatal(err)
	}
	// Inside: own changes are visible.
	if v, err := tx.Read(ctx, e.p("t/new")); err != nil || v != "n" {
		t.Fatalf("tx read own write: %q, %v", v, err)
	}
	if _, err := tx.Read(ctx, e.p("t/old")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("tx read own rm: %v", err)
	}
	names, _ := tx.Directory(ctx, e.p("t"))
	slices.Sort(names)
	if !slices.Equal(names, []string{"dir", "new"}) {
		t.Fatalf("tx directory %q", names)
	}
	if p, err := tx.GetPerms(ctx, e.p("t/new")); err != nil || !slices.Equal(p, []xenstore.Perm{{Dom: 0, Read: true}}) {
		t.Fatalf("tx get perms %v, %v", p, err)
	}
	// Outside: nothing yet.
	if _, err := c.Read(ctx, e.p("t/new")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("read outside before commit: %v", err)
	}
	if v, err := c.Read(ctx, e.p("t/old")); err != nil || v != "o" {
		t.Fatalf("old outside before commit: %q %v", v, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if v, err := c.Read(ctx, e.p("t/new")); err != nil || v != "n" {
		t.Fatalf("after commit: %q, %v", v, err)
	}
	if _, err := c.Read(ctx, e.p("t/old")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("old after commit: %v", err)
	}
	// The transaction is dead.
	if err := tx.Write(ctx, e.p("t/late"), "x"); !errors.Is(err, xenstore.ErrTxDone) {
		t.Fatalf("write after commit: %v", err)
	}
	if err := tx.Commit(ctx); !errors.Is(err, xenstore.ErrTxDone) {
		t.Fatalf("second commit: %v", err)
	}

	// Abort discards.
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Write(ctx, e.p("t/aborted"), "x"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(ctx, e.p("t/aborted")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("aborted write visible: %v", err)
	}
}

func TestTransactionConflict(t *testing.T) {
	e := newEnv(t)
	c, ctx := e.priv, ctxT(t)
	other := e.otherPriv()
	if err := c.Write(ctx, e.p("k"), "0"); err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Read(ctx, e.p("k")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Write(ctx, e.p("k2"), "from tx"); err != nil {
		t.Fatal(err)
	}
	// Another connection changes what the transaction read.
	if err := other.Write(ctx, e.p("k"), "1"); err != nil {
		t.Fatal(err)
	}
	mustErrno(t, tx.Commit(ctx), syscall.EAGAIN)
	if _, err := c.Read(ctx, e.p("k2")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("write of a failed transaction visible: %v", err)
	}
	// Unrelated changes do not conflict.
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Read(ctx, e.p("k")); err != nil {
		t.Fatal(err)
	}
	if err := other.Write(ctx, e.p("unrelated"), "1"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Write(ctx, e.p("k"), "2"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit without conflict: %v", err)
	}
}

func TestTransactionHelperRetries(t *testing.T) {
	e := newEnv(t)
	c, ctx := e.priv, ctxT(t)
	other := e.otherPriv()
	if err := c.Write(ctx, e.p("n"), "10"); err != nil {
		t.Fatal(err)
	}
	attempts := 0
	err := c.Transaction(ctx, func(tx *xenstore.Tx) error {
		attempts++
		v, err := tx.Read(ctx, e.p("n"))
		if err != nil {
			return err
		}
		if attempts == 1 {
			// Lose the first attempt to a concurrent writer.
			if err := other.Write(ctx, e.p("n"), "20"); err != nil {
				return err
			}
		}
		n, _ := strconv.Atoi(v)
		return tx.Write(ctx, e.p("n"), strconv.Itoa(n+1))
	})
	if err != nil {
		t.Fatal(err)
	}
	if attempts != 2 {
		t.Fatalf("fn ran %d times, want 2", attempts)
	}
	if v, _ := c.Read(ctx, e.p("n")); v != "21" {
		t.Fatalf("value %q, want 21 (the retry must see the concurrent write)", v)
	}

	// An error from fn aborts and is returned as is.
	boom := errors.New("boom")
	err = c.Transaction(ctx, func(tx *xenstore.Tx) error {
		if err := tx.Write(ctx, e.p("n"), "lost"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	if v, _ := c.Read(ctx, e.p("n")); v != "21" {
		t.Fatalf("aborted transaction changed the value to %q", v)
	}

	// A transaction that can never commit gives up after MaxTxAttempts.
	attempts = 0
	err = c.Transaction(ctx, func(tx *xenstore.Tx) error {
		attempts++
		if _, err := tx.Read(ctx, e.p("n")); err != nil {
			return err
		}
		return other.Write(ctx, e.p("n"), strconv.Itoa(attempts))
	})
	if !errors.Is(err, syscall.EAGAIN) || attempts != xenstore.MaxTxAttempts {
		t.Fatalf("endless conflict: %v after %d attempts", err, attempts)
	}
}

func TestTransactionConcurrentIncrements(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	clients := []*xenstore.Client{e.priv, e.otherPriv(), e.otherPriv()}
	if err := e.priv.Write(ctx, e.p("ctr"), "0"); err != nil {
		t.Fatal(err)
	}
	const perWorker = 15
	var wg sync.WaitGroup
	var exhausted atomic.Int64
	errs := make(chan error, len(clients)*2)
	for i := range len(clients) * 2 {
		c := clients[i%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < perWorker; {
				err := c.Transaction(ctx, func(tx *xenstore.Tx) error {
					v, err := tx.Read(ctx, e.p("ctr"))
					if err != nil {
						return err
					}
					n, err := strconv.Atoi(v)
					if err != nil {
						return err
					}
					return tx.Write(ctx, e.p("ctr"), strconv.Itoa(n+1))
				})
				if errors.Is(err, syscall.EAGAIN) {
					// Lost MaxTxAttempts conflicts in a row (six
					// incrementers on one node, against a xenstored that
					// serves a connection one message per round): that
					// increment did not happen; try it again.
					exhausted.Add(1)
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				done++
			}
		}()
	}
	wg.Wait()
	if n := exhausted.Load(); n > 0 {
		t.Logf("%d increments lost MaxTxAttempts conflicts in a row and were run again", n)
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if v, _ := e.priv.Read(ctx, e.p("ctr")); v != fmt.Sprint(len(clients)*2*perWorker) {
		t.Fatalf("counter %s, want %d: lost updates", v, len(clients)*2*perWorker)
	}
}

func TestTransactionOfUnprivilegedDomain(t *testing.T) {
	e := newEnv(t)
	e.needEmbedded()
	ctx := ctxT(t)
	d := e.domain(3)
	err := d.Transaction(ctx, func(tx *xenstore.Tx) error {
		if err := tx.Write(ctx, "data/a", "1"); err != nil {
			return err
		}
		_, err := tx.Read(ctx, "/local/domain/0/domid")
		return err
	})
	mustErrno(t, err, syscall.EACCES)
	if _, err := d.Read(ctx, "data/a"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("write of an aborted transaction visible: %v", err)
	}
}

// TestTransactionEventOrder: a transaction fires at commit once per node it
// changed, in the order in which it first accessed the nodes (a read
// counts), as xenstored's finalize_transaction walks its accessed nodes.
func TestTransactionEventOrder(t *testing.T) {
	e := newEnv(t)
	c, ctx := e.priv, ctxT(t)
	for _, k := range []string{"o/a", "o/b"} {
		if err := c.Write(ctx, e.p(k), "1"); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Watch(ctx, e.p("o"), "order")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	expectEvents(t, w, e.p("o"))
	err = c.Transaction(ctx, func(tx *xenstore.Tx) error {
		if _, err := tx.Read(ctx, e.p("o/b")); err != nil {
			return err
		}
		for _, k := range []string{"o/a", "o/b", "o/a"} {
			if err := tx.Write(ctx, e.p(k), "2"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, e.p("o/end"), ""); err != nil {
		t.Fatal(err)
	}
	expectEvents(t, w, e.p("o/b"), e.p("o/a"), e.p("o/end"))
}
