package xen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"strconv"
	"testing"
	"time"

	"idcfs/vchan"
)

// These tests need a Xen domain: they share pages and event channels with
// the domain they run in (loopback). IDCFS_XEN_DOMID gives this domain's id
// (default 0, dom0).

func openOrSkip(t *testing.T) (*Backend, vchan.DomID) {
	t.Helper()
	if _, err := os.Stat("/dev/xen/gntalloc"); errors.Is(err, fs.ErrNotExist) {
		t.Skip("needs /dev/xen/gntalloc: run on a Xen domain or under test/xen")
	}
	b, err := Open()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	self := 0
	if s := os.Getenv("IDCFS_XEN_DOMID"); s != "" {
		if self, err = strconv.Atoi(s); err != nil {
			t.Fatalf("IDCFS_XEN_DOMID: %v", err)
		}
	}
	return b, vchan.DomID(self)
}

func waitWithin(t *testing.T, c vchan.EventChannel, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := c.Wait(ctx); err != nil {
		t.Fatalf("Wait on port %d: %v", c.Port(), err)
	}
}

// drain consumes an event that may be pending (Xen marks a freshly bound
// interdomain port pending).
func drain(c vchan.EventChannel) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = c.Wait(ctx) // nothing may be pending; that is fine
}

func bindPair(t *testing.T, b *Backend, self vchan.DomID) (srv, cli vchan.EventChannel) {
	t.Helper()
	srv, err := b.AllocUnbound(self)
	if err != nil {
		t.Fatalf("AllocUnbound: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	cli, err = b.Bind(self, srv.Port())
	if err != nil {
		t.Fatalf("Bind: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	drain(srv)
	drain(cli)
	return srv, cli
}

func TestIntegrationEvents(t *testing.T) {
	b, self := openOrSkip(t)
	srv, cli := bindPair(t, b, self)
	for i := range 3 {
		if err := srv.Notify(); err != nil {
			t.Fatal(err)
		}
		waitWithin(t, cli, 5*time.Second)
		if err := cli.Notify(); err != nil {
			t.Fatal(err)
		}
		waitWithin(t, srv, 5*time.Second)
		t.Logf("round %d ok (ports %d, %d)", i, srv.Port(), cli.Port())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := cli.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with nothing pending = %v", err)
	}
}

func TestIntegrationGrantsAndUnmapNotify(t *testing.T) {
	b, self := openOrSkip(t)
	srv, cli := bindPair(t, b, self)

	sh, err := b.Share(self, 3)
	if err != nil {
		t.Fatalf("Share: %v", err)
	}
	defer sh.Close()
	if len(sh.Bytes()) != 3*vchan.PageSize || len(sh.Refs()) != 3 {
		t.Fatalf("Share: %d bytes, %d refs", len(sh.Bytes()), len(sh.Refs()))
	}
	for i := range sh.Bytes() {
		sh.Bytes()[i] = byte(i * 7)
	}
	mp, err := b.Map(self, sh.Refs(), true)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	if !bytes.Equal(mp.Bytes(), sh.Bytes()) {
		t.Fatal("mapped pages differ from the shared ones")
	}
	mp.Bytes()[5000] = 0xAB
	if sh.Bytes()[5000] != 0xAB {
		t.Fatal("a write through the mapping is not seen by the sharer")
	}

	// Client-style notify: closing the mapping clears byte 20 and signals.
	sh.Bytes()[20] = 1
	if err := mp.SetUnmapNotify(20, cli); err != nil {
		t.Fatalf("gntdev SetUnmapNotify: %v", err)
	}
	if err := mp.Close(); err != nil {
		t.Fatalf("Close mapping: %v", err)
	}
	waitWithin(t, srv, 5*time.Second)
	if sh.Bytes()[20] != 0 {
		t.Errorf("byte 20 = %d after the mapping closed, want 0", sh.Bytes()[20])
	}

	// Server-style notify: closing the share clears byte 21 (seen through a
	// second mapping, which keeps the page alive) and signals.
	sh.Bytes()[21] = 1
	if err := sh.SetUnmapNotify(21, srv); err != nil {
		t.Fatalf("gntalloc SetUnmapNotify: %v", err)
	}
	mp2, err := b.Map(self, sh.Refs(), false)
	if err != nil {
		t.Fatalf("Map read-only: %v", err)
	}
	defer mp2.Close()
	if err := sh.Close(); err != nil {
		t.Fatalf("Close share: %v", err)
	}
	waitWithin(t, cli, 5*time.Second)
	if mp2.Bytes()[21] != 0 {
		t.Errorf("byte 21 = %d after the share closed, want 0", mp2.Bytes()[21])
	}
	if mp2.Bytes()[5000] != 0xAB {
		t.Error("page content lost while still mapped")
	}
}

func TestIntegrationEndpointLoopback(t *testing.T) {
	b, self := openOrSkip(t)
	for _, tc := range []struct {
		name         string
		left, right  int
		bytesToCarry int
	}{
		{"in-page rings", 0, 0, 256 << 10},
		{"64KiB rings", 64 << 10, 64 << 10, 4 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := vchan.NewServer(b, self, tc.left, tc.right)
			if err != nil {
				t.Fatalf("NewServer: %v", err)
			}
			defer srv.Close()
			cli, err := vchan.NewClient(b, self, srv.RingRef(), srv.Port())
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := srv.WaitConnected(ctx); err != nil {
				t.Fatalf("WaitConnected: %v", err)
			}
			data := make([]byte, tc.bytesToCarry)
			for i := range data {
				data[i] = byte(i*31 + i>>8)
			}
			werr := make(chan error, 1)
			go func() {
				_, err := cli.WriteContext(ctx, data)
				werr <- errors.Join(err, cli.Close())
			}()
			start := time.Now()
			got, err := io.ReadAll(srv)
			el := time.Since(start)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("write: %v", err)
			}
			if sha256.Sum256(got) != sha256.Sum256(data) {
				t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(data))
			}
			t.Logf("%d bytes in %v (%.1f MiB/s)", len(got), el, float64(len(got))/el.Seconds()/(1<<20))
		})
	}
}
