package vchan_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"idcfs/vchan"
	"idcfs/vchan/heap"
)

const (
	srvDom vchan.DomID = 0
	cliDom vchan.DomID = 5
)

// pair builds a connected server/client pair on a fresh heap host; the
// test's cleanup closes both.
func pair(t testing.TB, leftMin, rightMin int) (h *heap.Host, srv, cli *vchan.Endpoint) {
	t.Helper()
	h = heap.New()
	srv = server(t, h, leftMin, rightMin)
	return h, srv, client(t, h, srv)
}

func server(t testing.TB, h *heap.Host, leftMin, rightMin int) *vchan.Endpoint {
	t.Helper()
	srv, err := vchan.NewServer(h.Domain(srvDom), cliDom, leftMin, rightMin)
	if err != nil {
		t.Fatalf("NewServer(%d, %d): %v", leftMin, rightMin, err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func client(t testing.TB, h *heap.Host, srv *vchan.Endpoint) *vchan.Endpoint {
	t.Helper()
	cli, err := vchan.NewClient(h.Domain(cliDom), srvDom, srv.RingRef(), srv.Port())
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// testCtx fails slow tests instead of letting them hang.
func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// pat is the byte at stream position i of test data. 251 is prime, so a
// byte taken from a wrong ring offset shows up.
func pat(i uint64) byte { return byte(i%251) ^ byte(i/251) }

func fill(b []byte, pos uint64) {
	for i := range b {
		b[i] = pat(pos + uint64(i))
	}
}

func check(b []byte, pos uint64) error {
	for i := range b {
		if want := pat(pos + uint64(i)); b[i] != want {
			return fmt.Errorf("byte %d of stream = %#x, want %#x", pos+uint64(i), b[i], want)
		}
	}
	return nil
}

// transfer streams total pattern bytes from w to r, the writer using chunk
// sizes from wsz in turn and the reader buffers from rsz, and checks every
// byte.
func transfer(ctx context.Context, w, r *vchan.Endpoint, total int, wsz, rsz []int) error {
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 0, slices.Max(wsz))
		pos := 0
		for i := 0; pos < total; i++ {
			n := min(wsz[i%len(wsz)], total-pos)
			buf = buf[:n]
			fill(buf, uint64(pos))
			m, err := w.WriteContext(ctx, buf)
			pos += m
			if err != nil {
				werr <- fmt.Errorf("write at %d: %w", pos, err)
				return
			}
			if m != n {
				werr <- fmt.Errorf("short write %d of %d without error", m, n)
				return
			}
		}
		werr <- nil
	}()
	buf := make([]byte, slices.Max(rsz))
	pos := 0
	for i := 0; pos < total; i++ {
		n, err := r.ReadContext(ctx, buf[:rsz[i%len(rsz)]])
		if err != nil {
			return fmt.Errorf("read at %d: %w", pos, err)
		}
		if n == 0 {
			return fmt.Errorf("read returned 0 bytes and no error at %d", pos)
		}
		if err := check(buf[:n], uint64(pos)); err != nil {
			return err
		}
		pos += n
	}
	return <-werr
}

var _ = bytes.Equal
