package vchan_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"idcfs/vchan"
	"idcfs/vchan/heap"
)

// rawServer is a hand-driven server side: a shared control page, an unbound
// port and extra page shares whose refs a test can put in the grant list.
type rawServer struct {
	h      *heap.Host
	ctrl   vchan.Mapping
	page   []byte
	ev     vchan.EventChannel
	shares [][]uint32
}

func newRawServer(t testing.TB, sharePages ...int) *rawServer {
	t.Helper()
	h := heap.New()
	d := h.Domain(srvDom)
	ev, err := d.AllocUnbound(cliDom)
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := d.Share(cliDom, 1)
	if err != nil {
		t.Fatal(err)
	}
	r := &rawServer{h: h, ctrl: ctrl, page: ctrl.Bytes(), ev: ev}
	for _, n := range sharePages {
		m, err := d.Share(cliDom, n)
		if err != nil {
			t.Fatal(err)
		}
		r.shares = append(r.shares, m.Refs())
	}
	return r
}

// layout writes a header the way a server would (orders, flags, grants).
func (r *rawServer) layout(left, right uint16, grants ...uint32) {
	binary.LittleEndian.PutUint16(r.page[16:], left)
	binary.LittleEndian.PutUint16(r.page[18:], right)
	copy(r.page[20:24], []byte{2, 1, 1, 0})
	for i, g := range grants {
		binary.LittleEndian.PutUint32(r.page[24+4*i:], g)
	}
}

func (r *rawServer) dial() (*vchan.Endpoint, error) {
	return vchan.NewClient(r.h.Domain(cliDom), srvDom, r.ctrl.Refs()[0], r.ev.Port())
}

func TestClientInitValidation(t *testing.T) {
	// Shares: [0] 1 page, [1] 1 page, [2] 2 pages, [3] 256 pages.
	tests := []struct {
		name        string
		setup       func(r *rawServer) (ref, port uint32)
		err         error // nil: must connect
		wantW, want int   // ring sizes when it connects
	}{
		{name: "zeroed stale page", err: vchan.ErrBadLayout},
		{name: "orders 10,10 overlap", setup: orders(10, 10), err: vchan.ErrBadLayout},
		{name: "orders 11,11 overlap", setup: orders(11, 11), err: vchan.ErrBadLayout},
		{name: "order 9", setup: orders(9, 12), err: vchan.ErrBadLayout},
		{name: "order 21", setup: orders(12, 21), err: vchan.ErrBadLayout},
		{name: "order 0xffff", setup: orders(0xffff, 11), err: vchan.ErrBadLayout},
		{name: "ring-ref 0", setup: func(r *rawServer) (uint32, uint32) { r.layout(10, 11); return 0, r.ev.Port() }, err: vchan.ErrBadRef},
		{name: "port 0", setup: func(r *rawServer) (uint32, uint32) { r.layout(10, 11); return r.ctrl.Refs()[0], 0 }, err: vchan.ErrBadRef},
		{name: "unknown ring-ref", setup: func(r *rawServer) (uint32, uint32) { r.layout(10, 11); return 9999, r.ev.Port() }, err: heap.ErrBadGrant},
		{name: "unknown port", setup: func(r *rawServer) (uint32, uint32) { r.layout(10, 11); return r.ctrl.Refs()[0], 77 }, err: heap.ErrBadPort},
		{name: "bogus grant", setup: func(r *rawServer) (uint32, uint32) {
			r.layout(12, 11, 12345)
			return r.ctrl.Refs()[0], r.ev.Port()
		}, err: heap.ErrBadGrant},
		{name: "grant is the control page", setup: func(r *rawServer) (uint32, uint32) {
			r.layout(12, 11, r.ctrl.Refs()[0])
			return r.ctrl.Refs()[0], r.ev.Port()
		}, wantW: 4096, want: 2048}, // legal for the protocol; only the server is hurt
		{name: "10,11 in-page", setup: orders(10, 11), wantW: 1024, want: 2048},
		{name: "11,10 in-page", setup: orders(11, 10), wantW: 2048, want: 1024},
		{name: "12,12", setup: func(r *rawServer) (uint32, uint32) {
			r.layout(12, 12, r.shares[0][0], r.shares[1][0])
			return r.ctrl.Refs()[0], r.ev.Port()
		}, wantW: 4096, want: 4096},
		{name: "13,11", setup: func(r *rawServer) (uint32, uint32) {
			r.layout(13, 11, r.shares[2]...)
			return r.ctrl.Refs()[0], r.ev.Port()
		}, wantW: 8192, want: 2048},
		{name: "grants out of order", setup: func(r *rawServer) (uint32, uint32) {
			r.layout(13, 11, r.shares[2][1], r.shares[2][0])
			return r.ctrl.Refs()[0], r.ev.Port()
		}, err: heap.ErrNotContiguous},
		// ocaml-vchan's layout: 1 KiB in-page ring next to a 1 MiB external
		// ring whose grant list runs into the in-page ring's bytes.
		{name: "10 in-page with 20 external", setup: func(r *rawServer) (uint32, uint32) {
			r.layout(10, 20, r.shares[3]...)
			return r.ctrl.Refs()[0], r.ev.Port()
		}, wantW: 1024, want: 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRawServer(t, 1, 1, 2, 256)
			ref, port := r.ctrl.Refs()[0], r.ev.Port()
			if tt.setup != nil {
				ref, port = tt.setup(r)
			}
			cli, err := vchan.NewClient(r.h.Domain(cliDom), srvDom, ref, port)
			if !errors.Is(err, tt.err) {
				t.Fatalf("NewClient = %v, want %v", err, tt.err)
			}
			if err != nil {
				if cli != nil {
					t.Fatal("non-nil Endpoint with an error")
				}
				return
			}
			defer cli.Close()
			if s := cli.Stats(); s.WriteRing != tt.wantW || s.ReadRing != tt.want {
				t.Fatalf("rings %d/%d, want %d/%d", s.WriteRing, s.ReadRing, tt.wantW, tt.want)
			}
			if w := vchan.Word(r.page, vchan.OffFlags); w != 0x01010101 {
				t.Fatalf("flags after connect = %#08x", w)
			}
			if n, err := cli.Write([]byte("hi")); n != 2 || err != nil {
				t.Fatalf("write %d, %v", n, err)
			}
		})
	}
}

func orders(l, r uint16) func(*rawServer) (uint32, uint32) {
	return func(s *rawServer) (uint32, uint32) {
		s.layout(l, r)
		return s.ctrl.Refs()[0], s.ev.Port()
	}
}

// TestHostileValues: values the protocol forbids make the endpoint fail
// with a *BrokenError; hints and fields it must not re-read are ignored.
func TestHostileValues(t *testing.T) {
	tests := []struct {
		name   string
		poke   func(page []byte, cli *vchan.Endpoint)
		op     string // what the client does next: "read" or "write"
		broken string // BrokenError.What, or "" when it must keep working
	}{
		{name: "read ring prod beyond size", op: "read", broken: "read ring prod-cons",
			poke: func(p []byte, _ *vchan.Endpoint) { vchan.StoreWord(p, vchan.OffRightProd, 2049) }},
		{name: "read ring prod behind cons", op: "read", broken: "read ring prod-cons",
			poke: func(p []byte, _ *vchan.Endpoint) { vchan.StoreWord(p, vchan.OffRightProd, 0xFFFFFFFF) }},
		{name: "write ring cons ahead of prod", op: "write", broken: "write ring prod-cons",
			poke: func(p []byte, _ *vchan.Endpoint) { vchan.StoreWord(p, vchan.OffLeftCons, 1) }},
		{name: "write ring cons far behind", op: "write", broken: "write ring prod-cons",
			poke: func(p []byte, _ *vchan.Endpoint) { vchan.StoreWord(p, vchan.OffLeftCons, 0x80000000) }},
		{name: "server live byte 7", op: "read", broken: "peer live byte",
			poke: func(p []byte, _ *vchan.Endpoint) { vchan.StoreWord(p, vchan.OffFlags, 0x01010701) }},
		{name: "server live byte 0xff", op: "write", broken: "peer live byte",
			poke: func(p []byte, _ *vchan.Endpoint) { vchan.StoreWord(p, vchan.OffFlags, 0x0101ff01) }},
		{name: "orders rewritten", op: "read",
			poke: func(p []byte, _ *vchan.Endpoint) { vchan.StoreWord(p, vchan.OffOrders, 0xffff0000) }},
		{name: "notify bytes garbage", op: "write",
			poke: func(p []byte, _ *vchan.Endpoint) { vchan.StoreWord(p, vchan.OffFlags, 0xffff0101) }},
		{name: "own index overwritten", op: "write",
			poke: func(p []byte, _ *vchan.Endpoint) { vchan.StoreWord(p, vchan.OffLeftProd, 0x12345678) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv, cli := pair(t, 0, 0)
			ctx := testCtx(t, 10*time.Second)
			srv.Write([]byte("data"))
			tt.poke(srv.PageForTest(), cli)
			var err error
			buf := make([]byte, 16)
			var n int
			if tt.op == "read" {
				n, err = cli.ReadContext(ctx, buf)
			} else {
				n, err = cli.WriteContext(ctx, []byte("more"))
			}
			if tt.broken == "" {
				if err != nil || n != 4 {
					t.Fatalf("%s = %d, %v; want it to keep working", tt.op, n, err)
				}
				return
			}
			var be *vchan.BrokenError
			if !errors.As(err, &be) || !errors.Is(err, vchan.ErrBroken) || be.What != tt.broken {
				t.Fatalf("%s = %d, %v; want BrokenError %q", tt.op, n, err, tt.broken)
			}
			select {
			case <-cli.Done():
			default:
				t.Fatal("Done not closed after a broken peer")
			}
			if !errors.Is(cli.Err(), vchan.ErrBroken) {
				t.Fatalf("Err = %v", cli.Err())
			}
			// Every later operation fails the same way.
			if _, err := cli.ReadContext(ctx, buf); !errors.Is(err, vchan.ErrBroken) {
				t.Fatalf("later read = %v", err)
			}
			if _, err := cli.WriteContext(ctx, buf); !errors.Is(err, vchan.ErrBroken) {
				t.Fatalf("later write = %v", err)
			}
		})
	}
}

// allowed reports whether err is an acceptable outcome facing a hostile peer.
func allowed(err error) bool {
	return err == nil || errors.Is(err, vchan.ErrBroken) || errors.Is(err, vchan.ErrPeerClosed) ||
		err == io.EOF || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, os.ErrDeadlineExceeded)
}

// hostileRound has the honest endpoint read and write while poke rewrites
// the control page. The honest side's read ring holds pat(offset), so every
// byte it returns can be checked against the ring offset it must come
// from; every byte it writes must land at the right offset of its write
// ring and nowhere else.
type hostileRound struct {
	honest   *vchan.Endpoint
	rd, wr   []byte
	readN    int
	writtenN int
}

func (hr *hostileRound) read(t testing.TB, ctx context.Context, n int) {
	start, _ := hr.honest.ShadowsForTest()
	buf := make([]byte, n)
	got, err := hr.honest.ReadContext(ctx, buf)
	if !allowed(err) {
		t.Fatalf("read: unexpected error %v", err)
	}
	if got < 0 || got > n || got > len(hr.rd) || (err != nil && got != 0) {
		t.Fatalf("read returned %d of %d bytes, err %v", got, n, err)
	}
	mask := uint32(len(hr.rd) - 1)
	for i := range got {
		if want := pat(uint64((start + uint32(i)) & mask)); buf[i] != want {
			t.Fatalf("read byte %d = %#x, want %#x from ring offset %d", i, buf[i], want, (start+uint32(i))&mask)
		}
	}
	hr.readN += got
}

func (hr *hostileRound) write(t testing.TB, ctx context.Context, n int, seed byte) {
	_, start := hr.honest.ShadowsForTest()
	src := make([]byte, n)
	for i := range src {
		src[i] = seed + byte(i)
	}
	got, err := hr.honest.WriteContext(ctx, src)
	if !allowed(err) {
		t.Fatalf("write: unexpected error %v", err)
	}
	if got < 0 || got > n {
		t.Fatalf("write returned %d of %d bytes", got, n)
	}
	mask := uint32(len(hr.wr) - 1)
	// Only the last ring's worth can still be in the ring.
	for i := max(0, got-len(hr.wr)); i < got; i++ {
		if off := (start + uint32(i)) & mask; hr.wr[off] != src[i] {
			t.Fatalf("written byte %d at ring offset %d = %#x, want %#x", i, off, hr.wr[off], src[i])
		}
	}
	hr.writtenN += got
}

func (hr *hostileRound) checkReadRing(t testing.TB) {
	for i, b := range hr.rd {
		if b != pat(uint64(i)) {
			t.Fatalf("read ring byte %d changed to %#x: a write went to the wrong ring", i, b)
		}
	}
}

// TestHostileScribble: a hostile goroutine keeps rewriting the whole header
// of the control page (indices, orders, flags) with random and
// near-plausible values while the honest side reads and writes. The honest
// side must return correct data or an allowed error, and never panic or
// hang.
func TestHostileScribble(t *testing.T) {
	for _, role := range []string{"client", "server"} {
		t.Run(role, func(t *testing.T) {
			total := 0
			for round := range 12 {
				sizes := [][2]int{{0, 0}, {4096, 8192}, {2048, 1024}}[round%3]
				_, srv, cli := pair(t, sizes[0], sizes[1])
				honest := cli
				if role == "server" {
					honest = srv
				}
				honest.SetRecheckForTest(2 * time.Millisecond) // scribbles send no events
				rd, wr := honest.RingsForTest()
				for i := range rd {
					rd[i] = pat(uint64(i))
				}
				hr := &hostileRound{honest: honest, rd: rd, wr: wr}
				page := honest.PageForTest()
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() {
					defer close(done)
					rng := rand.New(rand.NewPCG(uint64(round), 7))
					size := uint32(len(rd))
					// Word offsets from the honest side's point of view.
					rdProd, rdCons, wrProd, wrCons, liveShift := vchan.OffLeftProd, vchan.OffLeftCons, vchan.OffRightProd, vchan.OffRightCons, 0
					if role == "client" {
						rdProd, rdCons, wrProd, wrCons, liveShift = vchan.OffRightProd, vchan.OffRightCons, vchan.OffLeftProd, vchan.OffLeftCons, 8
					}
					for {
						select {
						case <-stop:
							return
						default:
						}
						var off int
						var v uint32
						switch k := rng.IntN(1000); {
						case k < 5: // anything anywhere in the header
							off, v = 4*rng.IntN(6), rng.Uint32()
						case k < 350: // legal-looking data for us to read
							off, v = rdProd, vchan.Word(page, rdCons)+uint32(rng.IntN(int(size)+1))
						case k < 700: // legal-looking consumption of what we wrote
							off, v = wrCons, vchan.Word(page, wrProd)-uint32(rng.IntN(int(size)+1))
						case k < 850: // live bytes kept legal, notify bits at random
							w := rng.Uint32() &^ (0xff << liveShift)
							live := []uint32{1, 1, 1, 2}[rng.IntN(4)]
							if role == "client" && live == 2 {
								live = 1
							}
							off, v = vchan.OffFlags, w|live<<liveShift
						case k < 925: // orders: must never be re-read
							off, v = vchan.OffOrders, rng.Uint32()
						default: // our own indices: must never be read back
							off, v = []int{rdCons, wrProd}[rng.IntN(2)], rng.Uint32()
						}
						vchan.StoreWord(page, off, v)
						time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
					}
				}()
				for i := range 60 {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Millisecond)
					if i%2 == 0 {
						hr.read(t, ctx, 1+i*37%3000)
					} else {
						hr.write(t, ctx, 1+i*53%3000, byte(i))
					}
					cancel()
				}
				close(stop)
				<-done
				hr.checkReadRing(t)
				total += hr.readN
				t.Logf("round %d: read %d, wrote %d, Err %v", round, hr.readN, hr.writtenN, honest.Err())
			}
			if total == 0 {
				t.Fatal("the honest side never read anything: the test exercised nothing")
			}
			t.Logf("%s read %d checked bytes under scribbling", role, total)
		})
	}
}
