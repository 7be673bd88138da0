// Command fuserelay is the baseline of the FUSE data-path benchmark: a
// filesystem that does nothing but move bytes from one file to another inside
// one daemon. It measures what FUSE itself costs on this machine, so that the
// figures of idcfs can be given as ratios against it.
//
// The mount holds channels c0 and c1 (more with -channels). A write to
// c<i>.w becomes readable from c<i>.r. Each channel has a bounded buffer
// (-buf); a writer blocks while it is full and a reader while it is empty.
// A reader sees EOF once a writer has opened and every writer has closed and
// the buffer is drained. Files are opened with the same flags idcfs uses for
// connection files (direct I/O, stream, non-seekable) and the mount uses the
// same MaxWrite (1 MiB).
//
// Usage:
//
//	fuserelay [-buf BYTES] [-channels N] [-debug] MOUNTPOINT
//
// It prints "ready" once the mount answers and unmounts on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fuserelay:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fset := flag.NewFlagSet("fuserelay", flag.ContinueOnError)
	bufSize := fset.Int("buf", 1<<20, "bytes buffered per channel")
	channels := fset.Int("channels", 2, "number of channels c0..cN-1")
	debug := fset.Bool("debug", false, "log every FUSE request")
	splice := fset.Bool("splice", false, "let go-fuse try splice(2) for read replies (as idcfs would if it enabled it)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() != 1 {
		return errors.New("usage: fuserelay [-buf BYTES] [-channels N] [-debug] MOUNTPOINT")
	}
	if *bufSize < 1 || *channels < 1 {
		return errors.New("-buf and -channels must be positive")
	}
	mnt := fset.Arg(0)

	// A relay killed earlier leaves a stale mount behind: detach it first.
	if _, err := os.Stat(mnt); errors.Is(err, syscall.ENOTCONN) {
		_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
	}

	root := &relayRoot{bufSize: *bufSize, channels: *channels}
	sec := time.Second
	srv, err := fs.Mount(mnt, root, &fs.Options{
		EntryTimeout: &sec,
		AttrTimeout:  &sec,
		MountOptions: fuse.MountOptions{
			FsName:            "fuserelay",
			Name:              "fuserelay",
			MaxWrite:          1 << 20,
			DirectMountStrict: os.Geteuid() == 0,
			DisableSplice:     !*splice,
			Debug:             *debug,
		},
	})
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "c0.r")); err != nil {
		_ = srv.Unmount()
		return fmt.Errorf("mount does not answer: %w", err)
	}
	fmt.Println("ready", mnt)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-sigs:
	case <-done:
		return nil
	}
	root.closeAll()
	if err := srv.Unmount(); err != nil {
		_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
	}
	<-done
	return nil
}

// relayRoot is the root directory; its children are built once in OnAdd.
type relayRoot struct {
	fs.Inode
	bufSize  int
	channels int

	mu    sync.Mutex
	chans []*channel
}

var _ fs.NodeOnAdder = (*relayRoot)(nil)

func (r *relayRoot) OnAdd(ctx context.Context) {
	for i := 0; i < r.channels; i++ {
		c := newChannel(r.bufSize)
		r.mu.Lock()
		r.chans = append(r.chans, c)
		r.mu.Unlock()
		for _, end := range []struct {
			suffix string
			writer bool
		}{{".r", false}, {".w", true}} {
			n := &relayFile{ch: c, writer: end.writer}
			child := r.NewPersistentInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG})
			r.AddChild(fmt.Sprintf("c%d%s", i, end.suffix), child, false)
		}
	}
}

func (r *relayRoot) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.chans {
		c.shutdown()
	}
}

// relayFile is one end of a channel.
type relayFile struct {
	fs.Inode
	ch     *channel
	writer bool
}

var (
	_ fs.NodeOpener    = (*relayFile)(nil)
	_ fs.NodeGetattrer = (*relayFile)(nil)
	_ fs.NodeSetattrer = (*relayFile)(nil)
)

func (f *relayFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o666
	return 0
}

// Setattr accepts the truncation that `>` and dd's O_TRUNC ask for.
func (f *relayFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o666
	return 0
}

func (f *relayFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	const streamFlags = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_STREAM | fuse.FOPEN_NONSEEKABLE
	acc := flags & syscall.O_ACCMODE
	if f.writer {
		if acc == syscall.O_RDONLY {
			return nil, 0, syscall.EACCES
		}
		f.ch.openWriter()
		return &writeHandle{ch: f.ch}, streamFlags, 0
	}
	if acc != syscall.O_RDONLY {
		return nil, 0, syscall.EACCES
	}
	f.ch.openReader()
	return &readHandle{ch: f.ch}, streamFlags, 0
}

type writeHandle struct {
	ch   *channel
	once sync.Once
}

var (
	_ fs.FileWriter   = (*writeHandle)(nil)
	_ fs.FileReleaser = (*writeHandle)(nil)
)

func (h *writeHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, errno := h.ch.write(ctx, data)
	return uint32(n), errno
}

func (h *writeHandle) Release(ctx context.Context) syscall.Errno {
	h.once.Do(h.ch.closeWriter)
	return 0
}

type readHandle struct {
	ch   *channel
	once sync.Once
}

var (
	_ fs.FileReader   = (*readHandle)(nil)
	_ fs.FileReleaser = (*readHandle)(nil)
)

func (h *readHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, errno := h.ch.read(ctx, dest)
	if errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *readHandle) Release(ctx context.Context) syscall.Errno {
	h.once.Do(h.ch.readerGone)
	return 0
}

// channel is a bounded byte ring with blocking, interruptible read and write.
// Writers take turns (wsem), and so do readers (rsem); mu guards only the
// indexes, so a write and a read copy at the same time, on different parts of
// the ring.
type channel struct {
	wsem, rsem chan struct{}

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every state change
	buf       []byte
	head, n   int // read position and bytes buffered
	readers   int
	writers   int
	hadWriter bool
	closed    bool
}

func newChannel(size int) *channel {
	return &channel{
		buf:     make([]byte, size),
		changed: make(chan struct{}),
		wsem:    make(chan struct{}, 1),
		rsem:    make(chan struct{}, 1),
	}
}

// take waits for a turn on sem.
func take(ctx context.Context, sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// broadcastLocked wakes every waiter.
func (c *channel) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *channel) openWriter() {
	c.mu.Lock()
	c.writers++
	c.hadWriter = true
	c.broadcastLocked()
	c.mu.Unlock()
}

func (c *channel) closeWriter() {
	c.mu.Lock()
	c.writers--
	c.resetIfIdleLocked()
	c.broadcastLocked()
	c.mu.Unlock()
}

func (c *channel) openReader() {
	c.mu.Lock()
	c.readers++
	c.mu.Unlock()
}

func (c *channel) readerGone() {
	c.mu.Lock()
	c.readers--
	c.resetIfIdleLocked()
	c.mu.Unlock()
}

// resetIfIdleLocked makes a drained channel that nobody has open ready for
// the next pair of opens: its next reader waits for a new writer instead of
// seeing the EOF of the previous one.
func (c *channel) resetIfIdleLocked() {
	if c.readers == 0 && c.writers == 0 && c.n == 0 {
		c.hadWriter = false
	}
}

func (c *channel) shutdown() {
	c.mu.Lock()
	c.closed = true
	c.broadcastLocked()
	c.mu.Unlock()
}

func (c *channel) write(ctx context.Context, data []byte) (int, syscall.Errno) {
	if !take(ctx, c.wsem) {
		return 0, syscall.EINTR
	}
	defer func() { <-c.wsem }()
	done := 0
	for done < len(data) {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return done, syscall.EPIPE
		}
		free := len(c.buf) - c.n
		if free == 0 {
			wait := c.changed
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				if done > 0 {
					return done, 0
				}
				return 0, syscall.EINTR
			}
		}
		tail := (c.head + c.n) % len(c.buf)
		c.mu.Unlock()
		// The free part only grows while mu is released: the one reader
		// copying out takes bytes from the filled part.
		chunk := min(free, len(data)-done, len(c.buf)-tail)
		copy(c.buf[tail:tail+chunk], data[done:done+chunk])
		c.mu.Lock()
		c.n += chunk
		c.broadcastLocked()
		c.mu.Unlock()
		done += chunk
	}
	return done, 0
}

func (c *channel) read(ctx context.Context, dest []byte) (int, syscall.Errno) {
	if !take(ctx, c.rsem) {
		return 0, syscall.EINTR
	}
	defer func() { <-c.rsem }()
	for {
		c.mu.Lock()
		if n := c.n; n > 0 {
			head := c.head
			c.mu.Unlock()
			// The filled part only grows while mu is released.
			got := 0
			for got < len(dest) && got < n {
				chunk := min(n-got, len(dest)-got, len(c.buf)-head)
				copy(dest[got:got+chunk], c.buf[head:head+chunk])
				head = (head + chunk) % len(c.buf)
				got += chunk
			}
			c.mu.Lock()
			c.head = head
			c.n -= got
			c.broadcastLocked()
			c.mu.Unlock()
			return got, 0
		}
		if c.closed || (c.hadWriter && c.writers == 0) {
			c.mu.Unlock()
			return 0, 0
		}
		wait := c.changed
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, syscall.EINTR
		}
	}
}
