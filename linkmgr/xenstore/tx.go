package xenstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// MaxTxAttempts bounds how often Transaction runs its function when the
// commit keeps losing conflicts.
const MaxTxAttempts = 16

// Tx is an open Xenstore transaction. Its operations see a private snapshot
// plus the transaction's own changes; nothing is visible to others until
// Commit succeeds. A Tx is safe for concurrent use, but its operations are
// not ordered among themselves unless the caller orders them.
type Tx struct {
	c  *Client
	id uint32

	mu    sync.Mutex
	ended bool
}

// Begin starts a transaction. The caller must end it with Commit or Abort;
// Transaction does this itself and retries on conflicts.
func (c *Client) Begin(ctx context.Context) (*Tx, error) {
	reply, err := c.roundTrip(ctx, OpTransactionStart, 0, []byte{0}, opTxStart, "")
	if err != nil {
		return nil, err
	}
	s, err := ParseString(reply)
	if err != nil {
		return nil, fmt.Errorf("xenstore %s: %w", opTxStart, err)
	}
	id, ok := ParseTxID(s)
	if !ok {
		return nil, fmt.Errorf("xenstore %s: %w: transaction id %q", opTxStart, ErrProtocol, s)
	}
	return &Tx{c: c, id: id}, nil
}

// ID returns the transaction id the server assigned.
func (t *Tx) ID() uint32 { return t.id }

func (t *Tx) live() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return ErrTxDone
	}
	return nil
}

// end sends TRANSACTION_END. The transaction is dead afterwards whatever
// the answer.
func (t *Tx) end(ctx context.Context, commit bool) error {
	t.mu.Lock()
	if t.ended {
		t.mu.Unlock()
		return ErrTxDone
	}
	t.ended = true
	t.mu.Unlock()
	arg := "F"
	if commit {
		arg = "T"
	}
	id := strconv.FormatUint(uint64(t.id), 10)
	reply, err := t.c.roundTrip(ctx, OpTransactionEnd, t.id, AppendString(nil, arg), opTxEnd, id)
	if err != nil {
		return err
	}
	return expectOK(opTxEnd, id, reply)
}

// Commit ends the transaction and applies its changes. An error wrapping
// syscall.EAGAIN means another change conflicted: start over from Begin.
func (t *Tx) Commit(ctx context.Context) error { return t.end(ctx, true) }

// Abort ends the transaction and discards its changes.
func (t *Tx) Abort(ctx context.Context) error { return t.end(ctx, false) }

// Read is Client.Read inside the transaction.
func (t *Tx) Read(ctx context.Context, path string) (string, error) {
	if err := t.live(); err != nil {
		return "", err
	}
	return t.c.read(ctx, t.id, path)
}

// Write is Client.Write inside the transaction.
func (t *Tx) Write(ctx context.Context, path, value string) error {
	if err := t.live(); err != nil {
		return err
	}
	return t.c.write(ctx, t.id, path, value)
}

// Mkdir is Client.Mkdir inside the transaction.
func (t *Tx) Mkdir(ctx context.Context, path string) error {
	if err := t.live(); err != nil {
		return err
	}
	return t.c.simple(ctx, OpMkdir, opMkdir, t.id, path)
}

// Rm is Client.Rm inside the transaction.
func (t *Tx) Rm(ctx context.Context, path string) error {
	if err := t.live(); err != nil {
		return err
	}
	return t.c.simple(ctx, OpRm, opRm, t.id, path)
}

// Directory is Client.Directory inside the transaction.
func (t *Tx) Directory(ctx context.Context, path string) ([]string, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	return t.c.directory(ctx, t.id, path)
}

// GetPerms is Client.GetPerms inside the transaction.
func (t *Tx) GetPerms(ctx context.Context, path string) ([]Perm, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	return t.c.getPerms(ctx, t.id, path)
}

// SetPerms is Client.SetPerms inside the transaction.
func (t *Tx) SetPerms(ctx context.Context, path string, perms []Perm) error {
	if err := t.live(); err != nil {
		return err
	}
	return t.c.setPerms(ctx, t.id, path, perms)
}

// Transaction runs fn inside a transaction and commits it. If fn returns an
// error the transaction is aborted and that error returned. If the commit
// fails with EAGAIN (another change conflicted), fn runs again in a new
// transaction, at most MaxTxAttempts times in all, after a short random
// wait that grows with each attempt so that contending clients spread out.
// fn must therefore redo all its reads and must not have side effects
// outside the transaction that cannot be repeated.
func (c *Client) Transaction(ctx context.Context, fn func(tx *Tx) error) error {
	var err error
	for attempt := 0; attempt < MaxTxAttempts; attempt++ {
		if attempt > 0 {
			if werr := backoff(ctx, attempt); werr != nil {
				return werr
			}
		}
		var tx *Tx
		tx, err = c.Begin(ctx)
		if err != nil {
			return err
		}
		if err = fn(tx); err != nil {
			if aerr := tx.Abort(ctx); aerr != nil && !errors.Is(aerr, ErrTxDone) {
				return errors.Join(err, aerr)
			}
			return err
		}
		err = tx.Commit(ctx)
		if !errors.Is(err, syscall.EAGAIN) {
			return err
		}
	}
	return fmt.Errorf("xenstore transaction: gave up after %d attempts: %w", MaxTxAttempts, err)
}

// backoff waits a random time of up to 2^attempt milliseconds (at most
// 64 ms) before another attempt.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
