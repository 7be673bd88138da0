package vchan_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"idcfs/vchan"
	"idcfs/vchan/heap"
)

const (
	srvDom vchan.DomID = 0
	cliDom vchan.DomID = 5
)

// pair builds a connected server/client pair on a fresh heap host.
func pair(t testing.TB, leftMin, rightMin int) (h *heap.Host, srv, cli *vchan.Endpoint) {
	t.Helper()
	h = heap.New()
	srv, err := vchan.NewServer(h.Domain(srvDom), cliDom, leftMin, rightMin)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	cli, err = vchan.NewClient(h.Domain(cliDom), srvDom, srv.RingRef(), srv.Port())
	if err != nil {
		srv.Close()
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() {
		cli.Close()
		srv.Close()
	})
	return h, srv, cli
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHelloBothWays(t *testing.T) {
	_, srv, cli := pair(t, 0, 0)
	ctx := testCtx(t)
	if err := srv.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected: %v", err)
	}
	if _, err := cli.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := srv.ReadContext(ctx, buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("server read %q, %v", buf[:n], err)
	}
	if _, err := srv.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	n, err = cli.ReadContext(ctx, buf)
	if err != nil || string(buf[:n]) != "world" {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}
	if err := cli.Close(); err != nil {
		t.Fatalf("client Close: %v", err)
	}
	n, err = srv.ReadContext(ctx, buf)
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("server read after client close: %d, %v", n, err)
	}
	if _, err := srv.Write([]byte("x")); !errors.Is(err, vchan.ErrPeerClosed) {
		t.Fatalf("server write after client close: %v", err)
	}
	if !errors.Is(srv.Err(), vchan.ErrPeerClosed) {
		t.Fatalf("Err = %v", srv.Err())
	}
	_ = bytes.Equal
}
