package vchan

import (
	"errors"
	"sync"
	"testing"
)

func TestChooseOrders(t *testing.T) {
	// The table of spec §3 plus edges.
	tests := []struct {
		name                string
		leftMin, rightMin   int
		left, right, grants int
		err                 error
	}{
		{name: "defaults", leftMin: 0, rightMin: 0, left: 10, right: 11},
		{name: "1024,2048", leftMin: 1024, rightMin: 2048, left: 10, right: 11},
		{name: "2048,1024", leftMin: 2048, rightMin: 1024, left: 11, right: 10},
		{name: "2048,2048", leftMin: 2048, rightMin: 2048, left: 11, right: 12, grants: 1},
		{name: "4096,4096", leftMin: 4096, rightMin: 4096, left: 12, right: 12, grants: 2},
		{name: "8192,1024", leftMin: 8192, rightMin: 1024, left: 13, right: 11, grants: 2},
		{name: "65536,65536", leftMin: 65536, rightMin: 65536, left: 16, right: 16, grants: 32},
		{name: "4097,1", leftMin: 4097, rightMin: 1, left: 13, right: 11, grants: 2},
		{name: "1,3000", leftMin: 1, rightMin: 3000, left: 11, right: 12, grants: 1},
		{name: "max", leftMin: MaxRingSize, rightMin: MaxRingSize, left: 20, right: 20, grants: 512},
		{name: "too big left", leftMin: MaxRingSize + 1, err: ErrRingSize},
		{name: "too big right", rightMin: MaxRingSize + 1, err: ErrRingSize},
		{name: "negative", leftMin: -1, err: ErrRingSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, r, err := chooseOrders(tt.leftMin, tt.rightMin)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if l != tt.left || r != tt.right {
				t.Fatalf("orders = %d,%d, want %d,%d", l, r, tt.left, tt.right)
			}
			if !validOrders(l, r) {
				t.Fatalf("server chose orders %d,%d that a client rejects", l, r)
			}
			if g := ringPages(l) + ringPages(r); g != tt.grants {
				t.Fatalf("grants = %d, want %d", g, tt.grants)
			}
			if 1<<l < tt.leftMin || 1<<r < tt.rightMin {
				t.Fatalf("rings %d,%d smaller than asked %d,%d", 1<<l, 1<<r, tt.leftMin, tt.rightMin)
			}
		})
	}
}

func TestValidOrders(t *testing.T) {
	tests := []struct {
		left, right int
		ok          bool
	}{
		{10, 11, true}, {11, 10, true}, {10, 12, true}, {12, 10, true},
		{12, 12, true}, {20, 20, true}, {11, 20, true},
		{0, 0, false}, {10, 10, false}, {11, 11, false}, {9, 12, false},
		{12, 21, false}, {21, 10, false}, {65535, 12, false},
	}
	for _, tt := range tests {
		if got := validOrders(tt.left, tt.right); got != tt.ok {
			t.Errorf("validOrders(%d, %d) = %v, want %v", tt.left, tt.right, got, tt.ok)
		}
	}
}

func TestCeilLog2(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 0, 2: 1, 3: 2, 4: 2, 1023: 10, 1024: 10, 1025: 11, 1 << 20: 20} {
		if got := ceilLog2(n); got != want {
			t.Errorf("ceilLog2(%d) = %d, want %d", n, got, want)
		}
	}
}

func newFlagWord(v uint32) (flagWord, *uint32) {
	buf := make([]uint32, 1)
	buf[0] = v
	return flagWord{&buf[0]}, &buf[0]
}

func TestFlagWord(t *testing.T) {
	f, _ := newFlagWord(initialFlags)
	if got := f.load(); got != 0x00010102 {
		t.Fatalf("initial flags = %#08x, want 0x00010102", got)
	}
	for i, want := range []uint8{2, 1, 1, 0} {
		if b := byteOf(f.load(), i); b != want {
			t.Errorf("byte %d = %d, want %d", i, b, want)
		}
	}
	f.or(byteSrvNotify, notifyRead)
	if got := f.load(); got != 0x02010102 {
		t.Fatalf("after or = %#08x", got)
	}
	if !f.testAndClear(byteSrvNotify, notifyRead) {
		t.Fatal("testAndClear missed a set bit")
	}
	if f.testAndClear(byteSrvNotify, notifyRead) {
		t.Fatal("testAndClear found a cleared bit")
	}
	if !f.testAndClear(byteCliNotify, notifyWrite|notifyRead) {
		t.Fatal("testAndClear missed WRITE in cli_notify")
	}
	if !f.setBytes(byteMask(byteCliLive)|byteMask(byteSrvNotify), 0x01000001) {
		t.Fatal("setBytes failed without contention")
	}
	if got := f.load(); got != 0x01000101 {
		t.Fatalf("after setBytes = %#08x, want 0x01000101", got)
	}
	f.clearByte(byteSrvLive)
	if got := f.load(); got != 0x01000001 {
		t.Fatalf("after clearByte = %#08x, want 0x01000001", got)
	}
}

// TestFlagWordConcurrent: the peer ORs and clears its bits while we set our
// live byte; no update of either side may be lost.
func TestFlagWordConcurrent(t *testing.T) {
	f, _ := newFlagWord(0)
	const rounds = 20000
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // peer: toggles READ in cli_notify, ends with it set
		defer wg.Done()
		for range rounds {
			f.or(byteCliNotify, notifyRead)
			f.testAndClear(byteCliNotify, notifyRead)
		}
		f.or(byteCliNotify, notifyRead)
	}()
	go func() { // us: flip our live byte between 1 and 2, end with 1
		defer wg.Done()
		for i := range rounds {
			v := uint32(1 + i%2)
			for !f.setBytes(byteMask(byteSrvLive), v<<8) {
			}
			if b := byteOf(f.load(), byteSrvLive); b != 1 && b != 2 {
				t.Errorf("live byte passed through %d", b)
				return
			}
		}
		for !f.setBytes(byteMask(byteSrvLive), 1<<8) {
		}
	}()
	wg.Wait()
	if got := f.load(); got != 0x00020100 {
		t.Fatalf("final word = %#08x, want 0x00020100", got)
	}
}

func TestRingCopyWrap(t *testing.T) {
	buf := make([]byte, 1024)
	r := newRing(buf, 10)
	src := []byte("0123456789")
	r.copyIn(1020, src) // spec §10.1: 4 bytes at the end, 6 at the start
	if string(buf[1020:]) != "0123" || string(buf[:6]) != "456789" {
		t.Fatalf("wrapped copy landed wrong: %q %q", buf[1020:], buf[:6])
	}
	dst := make([]byte, 10)
	r.copyOut(dst, 1020+1024*7) // the index is free-running
	if string(dst) != "0123456789" {
		t.Fatalf("copyOut = %q", dst)
	}
	prod, cons := uint32(0x00000002), uint32(0xFFFFFFFA)
	if ready := prod - cons; ready != 8 {
		t.Fatalf("counter wrap: ready = %d", ready)
	}
}
