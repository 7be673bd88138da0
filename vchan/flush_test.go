package vchan_test

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"idcfs/vchan"
)

func TestFlush(t *testing.T) {
	t.Run("nothing written", func(t *testing.T) {
		_, srv, _ := pair(t, 4096, 4096)
		if err := srv.Flush(testCtx(t, 5*time.Second)); err != nil {
			t.Fatalf("Flush with nothing written: %v", err)
		}
	})
	t.Run("waits until the peer read everything", func(t *testing.T) {
		_, srv, cli := pair(t, 4096, 4096)
		msg := make([]byte, 3000)
		fill(msg, 0)
		if _, err := srv.Write(msg); err != nil {
			t.Fatal(err)
		}
		// Nobody reads yet: Flush must still be waiting when ctx ends.
		short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := srv.Flush(short); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Flush with an unread ring: %v, want context.DeadlineExceeded", err)
		}
		// Read in two parts, the second after a pause: Flush returns only
		// after the last byte was taken.
		got := make([]byte, len(msg))
		done := make(chan error, 1)
		go func() {
			if _, err := io.ReadFull(cli, got[:1000]); err != nil {
				done <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
			_, err := io.ReadFull(cli, got[1000:])
			done <- err
		}()
		if err := srv.Flush(testCtx(t, 10*time.Second)); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Flush returned but the reader had not taken every byte")
		}
		if err := check(got, 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("peer closes without reading", func(t *testing.T) {
		_, srv, cli := pair(t, 4096, 4096)
		if _, err := cli.Write([]byte("unread")); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(20 * time.Millisecond)
			srv.Close()
		}()
		if err := cli.Flush(testCtx(t, 10*time.Second)); !errors.Is(err, vchan.ErrPeerClosed) {
			t.Fatalf("Flush after the peer closed: %v, want ErrPeerClosed", err)
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		_, srv, _ := pair(t, 4096, 4096)
		if _, err := srv.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		srv.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
		if err := srv.Flush(context.Background()); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Flush past the write deadline: %v, want os.ErrDeadlineExceeded", err)
		}
	})
}
