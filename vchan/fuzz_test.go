package vchan_test

import (
	"context"
	"encoding/binary"
	"testing"

	"idcfs/vchan"
)

// FuzzClientInit: whatever the control page holds and whatever ring-ref and
// port the store gave, NewClient either fails or yields an endpoint whose
// non-blocking Read and Write stay within bounds; nothing panics.
func FuzzClientInit(f *testing.F) {
	// The raw server shares (in ref order after the control page, ref 1):
	// 1 page (ref 2), 1 page (ref 3), 2 pages (refs 4-5), 16 pages (6-21).
	hdr := func(left, right uint16, flags uint32, grants ...uint32) []byte {
		b := make([]byte, 24+4*len(grants))
		binary.LittleEndian.PutUint16(b[16:], left)
		binary.LittleEndian.PutUint16(b[18:], right)
		binary.LittleEndian.PutUint32(b[20:], flags)
		for i, g := range grants {
			binary.LittleEndian.PutUint32(b[24+4*i:], g)
		}
		return b
	}
	f.Add(hdr(10, 11, 0x00010102), uint32(1), uint32(1))
	f.Add(hdr(11, 10, 0x00010102), uint32(1), uint32(1))
	f.Add(hdr(12, 12, 0x00010102, 2, 3), uint32(1), uint32(1))
	f.Add(hdr(13, 12, 0x00010102, 4, 5, 2), uint32(1), uint32(1))
	f.Add(hdr(10, 16, 0x00010102, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21), uint32(1), uint32(1))
	f.Add(hdr(16, 11, 0x00000000, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21), uint32(1), uint32(1))
	f.Add(hdr(12, 11, 0x00ff0702, 1), uint32(1), uint32(1))
	f.Add(hdr(0, 0, 0), uint32(1), uint32(1))
	f.Add(hdr(10, 11, 0x00010102), uint32(0), uint32(1))
	f.Add(hdr(10, 11, 0x00010102), uint32(3), uint32(9))
	withIdx := hdr(10, 11, 0x00010102)
	binary.LittleEndian.PutUint32(withIdx[4:], 0xFFFFFFF0)
	binary.LittleEndian.PutUint32(withIdx[12:], 0x7777)
	f.Add(withIdx, uint32(1), uint32(1))
	f.Fuzz(func(t *testing.T, header []byte, ref, port uint32) {
		r := newRawServer(t, 1, 1, 2, 16)
		copy(r.page, header)
		cli, err := vchan.NewClient(r.h.Domain(cliDom), srvDom, ref, port)
		if err != nil {
			if cli != nil {
				t.Fatal("non-nil Endpoint with an error")
			}
			return
		}
		defer cli.Close()
		s := cli.Stats()
		if s.ReadRing < 1024 || s.ReadRing > 1<<20 || s.WriteRing < 1024 || s.WriteRing > 1<<20 {
			t.Fatalf("ring sizes %d/%d out of range", s.ReadRing, s.WriteRing)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // operations only do what needs no waiting
		buf := make([]byte, 5000)
		n, err := cli.ReadContext(ctx, buf)
		if n < 0 || n > len(buf) || n > s.ReadRing || !allowed(err) {
			t.Fatalf("read = %d, %v", n, err)
		}
		n, err = cli.WriteContext(ctx, buf)
		if n < 0 || n > s.WriteRing || !allowed(err) {
			t.Fatalf("write = %d, %v", n, err)
		}
	})
}

// FuzzRing: arbitrary peer indices and flags after connect; the client's
// non-blocking Read returns only bytes from the right ring offsets, Write
// puts bytes only where they belong, or they fail with an allowed error.
func FuzzRing(f *testing.F) {
	f.Add(uint8(0), uint32(5), uint32(0), uint32(0x01010101), uint16(10), uint16(10))
	f.Add(uint8(1), uint32(4096), uint32(4096), uint32(0x01010101), uint16(5000), uint16(5000))
	f.Add(uint8(2), uint32(1025), uint32(1), uint32(0x01010001), uint16(1), uint16(3000))
	f.Add(uint8(3), uint32(0xFFFFFFFF), uint32(0x80000000), uint32(0xffffffff), uint16(0), uint16(0))
	f.Add(uint8(0), uint32(2048), uint32(1024), uint32(0x00000101), uint16(2048), uint16(1024))
	f.Fuzz(func(t *testing.T, sel uint8, prodDelta, consDelta, flags uint32, rlen, wlen uint16) {
		sizes := [][2]int{{0, 0}, {4096, 4096}, {2048, 1024}, {8192, 16384}}[sel%4]
		_, srv, cli := pair(t, sizes[0], sizes[1])
		rd, wr := cli.RingsForTest()
		for i := range rd {
			rd[i] = pat(uint64(i))
		}
		hr := &hostileRound{honest: cli, rd: rd, wr: wr}
		page := srv.PageForTest()
		rdCons, wrProd := cli.ShadowsForTest()
		vchan.StoreWord(page, vchan.OffRightProd, rdCons+prodDelta)
		vchan.StoreWord(page, vchan.OffLeftCons, wrProd-consDelta)
		vchan.StoreWord(page, vchan.OffFlags, flags)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		hr.read(t, ctx, int(rlen))
		hr.write(t, ctx, int(wlen), 0x5a)
		hr.read(t, ctx, int(rlen))
		hr.checkReadRing(t)
	})
}
