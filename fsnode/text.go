package fsnode

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// textHandle serves a snapshot taken at open. With FOPEN_STREAM the kernel
// passes offset 0 on every read, so the handle keeps its own position;
// reopening gives fresh contents.
type textHandle struct {
	mu       sync.Mutex
	data     []byte
	pos      int
	released bool
}

func newTextHandle(data []byte) *textHandle {
	return &textHandle{data: data}
}

func (h *textHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return nil, syscall.EBADF
	}
	n := copy(dest, h.data[h.pos:])
	h.pos += n
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *textHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = true
	h.data = nil
	return 0
}
