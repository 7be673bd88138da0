package main

import (
	"bytes"
	"context"
	"syscall"
	"testing"
	"time"
)

func readAll(t *testing.T, c *channel) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 7) // odd size: reads straddle the ring's end
	for {
		n, errno := c.read(context.Background(), buf)
		if errno != 0 {
			t.Fatalf("read: %v", errno)
		}
		if n == 0 {
			return got
		}
		got = append(got, buf[:n]...)
	}
}

// TestChannelStream: bytes written through a ring smaller than the data come
// out in order, and the reader sees EOF once the writer closed.
func TestChannelStream(t *testing.T) {
	c := newChannel(16)
	want := bytes.Repeat([]byte("0123456789abcdef-"), 100)
	c.openReader()
	c.openWriter()
	done := make(chan []byte)
	go func() { done <- readAll(t, c) }()
	for off := 0; off < len(want); off += 50 {
		end := min(off+50, len(want))
		if n, errno := c.write(context.Background(), want[off:end]); errno != 0 || n != end-off {
			t.Fatalf("write = %d, %v", n, errno)
		}
	}
	c.closeWriter()
	if got := <-done; !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d (equal prefix: %v)", len(got), len(want), bytes.HasPrefix(want, got))
	}
	c.readerGone()
}

// TestChannelReuse: after both ends closed, the next reader waits for a new
// writer instead of seeing the previous EOF.
func TestChannelReuse(t *testing.T) {
	c := newChannel(64)
	c.openReader()
	c.openWriter()
	c.write(context.Background(), []byte("one"))
	c.closeWriter()
	if got := readAll(t, c); string(got) != "one" {
		t.Fatalf("first round: %q", got)
	}
	c.readerGone()

	c.openReader()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	n, errno := c.read(ctx, make([]byte, 8))
	if errno != syscall.EINTR || n != 0 {
		t.Fatalf("second reader without a writer: read = %d, %v; want 0, EINTR (waiting)", n, errno)
	}
	c.openWriter()
	c.write(context.Background(), []byte("two"))
	c.closeWriter()
	if got := readAll(t, c); string(got) != "two" {
		t.Fatalf("second round: %q", got)
	}
}

// TestChannelInterrupt: a write blocked on a full ring returns EINTR when
// its context ends, or the count written so far.
func TestChannelInterrupt(t *testing.T) {
	c := newChannel(4)
	c.openWriter()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	n, errno := c.write(ctx, []byte("abcdefgh"))
	if n != 4 || errno != 0 {
		t.Fatalf("write into a 4-byte ring = %d, %v; want 4, 0", n, errno)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if n, errno := c.write(ctx2, []byte("x")); n != 0 || errno != syscall.EINTR {
		t.Fatalf("write into a full ring = %d, %v; want 0, EINTR", n, errno)
	}
	c.shutdown()
	if _, errno := c.write(context.Background(), []byte("x")); errno != syscall.EPIPE {
		t.Fatalf("write after shutdown: %v, want EPIPE", errno)
	}
}
