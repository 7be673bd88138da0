package vchan_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"idcfs/vchan"
	"idcfs/vchan/heap"
)

func allZero(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

// TestServerPageDefaults checks spec §10.1 byte for byte.
func TestServerPageDefaults(t *testing.T) {
	h := heap.New()
	srv := server(t, h, 0, 0)
	page := srv.PageForTest()
	want := []byte{
		0, 0, 0, 0, // left.cons
		0, 0, 0, 0, // left.prod
		0, 0, 0, 0, // right.cons
		0, 0, 0, 0, // right.prod
		0x0a, 0x00, // left_order 10
		0x0b, 0x00, // right_order 11
		0x02, 0x01, 0x01, 0x00, // cli_live 2, srv_live 1, cli_notify WRITE, srv_notify 0
	}
	if !bytes.Equal(page[:24], want) {
		t.Fatalf("control page after init:\n got % x\nwant % x", page[:24], want)
	}
	if !allZero(page[24:]) {
		t.Fatal("bytes after the header are not zero")
	}
	if w := vchan.Word(page, vchan.OffFlags); w != 0x00010102 {
		t.Fatalf("flag word = %#08x, want 0x00010102", w)
	}
	cli := client(t, h, srv)
	if w := vchan.Word(page, vchan.OffFlags); w != 0x01010101 {
		t.Fatalf("flag word after connect = %#08x, want 0x01010101", w)
	}
	if err := srv.WaitConnected(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// "hello" lands in page bytes 1024..1028 (the in-page left ring).
	cli.Write([]byte("hello"))
	if string(page[1024:1029]) != "hello" || binary.LittleEndian.Uint32(page[vchan.OffLeftProd:]) != 5 {
		t.Fatalf("client write not at page offset 1024: % x", page[1024:1032])
	}
	srv.Write([]byte("world"))
	if string(page[2048:2053]) != "world" || binary.LittleEndian.Uint32(page[vchan.OffRightProd:]) != 5 {
		t.Fatalf("server write not at page offset 2048: % x", page[2048:2056])
	}
}

// TestServerPageOneRingPageEach checks spec §10.2 (orders 12/12).
func TestServerPageOneRingPageEach(t *testing.T) {
	h := heap.New()
	srv := server(t, h, 4096, 4096)
	page := srv.PageForTest()
	if want := []byte{0x0c, 0, 0x0c, 0, 2, 1, 1, 0}; !bytes.Equal(page[16:24], want) {
		t.Fatalf("bytes 16..23 = % x, want % x", page[16:24], want)
	}
	if !allZero(page[:16]) || !allZero(page[32:]) {
		t.Fatal("indices or bytes after the grant list are not zero")
	}
	g0, g1 := binary.LittleEndian.Uint32(page[24:]), binary.LittleEndian.Uint32(page[28:])
	if g0 == 0 || g1 == 0 || g0 == g1 || g0 == srv.RingRef() || g1 == srv.RingRef() {
		t.Fatalf("grants %d, %d (ring-ref %d)", g0, g1, srv.RingRef())
	}
	cli := client(t, h, srv)
	// grants[0] is the left ring (client writes), grants[1] the right one.
	d := h.Domain(cliDom)
	left, err := d.Map(srvDom, []uint32{g0}, false)
	if err != nil {
		t.Fatal(err)
	}
	right, err := d.Map(srvDom, []uint32{g1}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer left.Close()
	defer right.Close()
	cli.Write([]byte("abc"))
	srv.Write([]byte("xyz"))
	if string(left.Bytes()[:3]) != "abc" || string(right.Bytes()[:3]) != "xyz" {
		t.Fatalf("ring pages hold %q and %q", left.Bytes()[:3], right.Bytes()[:3])
	}
}

// TestServerOrderTable checks the orders and grant lists of spec §3's table.
func TestServerOrderTable(t *testing.T) {
	tests := []struct {
		leftMin, rightMin     int
		left, right           uint16
		leftPages, rightPages int
	}{
		{0, 0, 10, 11, 0, 0},
		{1024, 2048, 10, 11, 0, 0},
		{2048, 1024, 11, 10, 0, 0},
		{2048, 2048, 11, 12, 0, 1},
		{4096, 4096, 12, 12, 1, 1},
		{8192, 1024, 13, 11, 2, 0},
		{65536, 65536, 16, 16, 16, 16},
		{1 << 20, 1 << 20, 20, 20, 256, 256},
	}
	for _, tt := range tests {
		t.Run(itoa(tt.leftMin>>10)+"K,"+itoa(tt.rightMin>>10)+"K", func(t *testing.T) {
			h := heap.New()
			srv := server(t, h, tt.leftMin, tt.rightMin)
			page := srv.PageForTest()
			l, r := binary.LittleEndian.Uint16(page[16:]), binary.LittleEndian.Uint16(page[18:])
			if l != tt.left || r != tt.right {
				t.Fatalf("orders %d,%d, want %d,%d", l, r, tt.left, tt.right)
			}
			n := tt.leftPages + tt.rightPages
			seen := map[uint32]bool{srv.RingRef(): true}
			for i := range n {
				g := binary.LittleEndian.Uint32(page[24+4*i:])
				if g == 0 || seen[g] {
					t.Fatalf("grants[%d] = %d (zero or repeated)", i, g)
				}
				seen[g] = true
			}
			if end := 24 + 4*n; !allZero(page[end:]) {
				t.Fatalf("bytes after %d grants are not zero", n)
			}
			// The client can map and use what the table describes.
			cli := client(t, h, srv)
			if s := cli.Stats(); s.WriteRing != 1<<tt.left || s.ReadRing != 1<<tt.right {
				t.Fatalf("client rings %d/%d", s.WriteRing, s.ReadRing)
			}
		})
	}
}
