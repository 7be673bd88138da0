package fsnode

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"idcfs/linkmgr"
)

// connEntry is a connection opened through this filesystem, with the
// handles that refer to it: the open of listen/ or connect/ that made it,
// and any opens of conn/<id>/data since.
//
// Half-close: when the last handle that can write is released while
// handles that can only read remain, the connection's sending side is shut
// down (CloseWrite) and the peer reads EOF. A connection whose first
// handle was read-only keeps its sending side until a writer comes and
// goes, or until the last handle closes. When the last handle of any kind
// is released the connection is closed gracefully (Close).
type connEntry struct {
	fsys *filesystem
	c    *linkmgr.Conn
	id   uint64
	uid  uint32
	gid  uint32
	pid  uint32
	log  *logrus.Entry

	mu       sync.Mutex
	readers  int  // handles open for reading
	writers  int  // handles open for writing
	handles  int  // all handles
	shutWr   bool // CloseWrite done (by the last writer or by ctl)
	finished bool // Close done; no new handles
}

// adopt registers a connection just accepted or dialled and returns its
// first handle. If the filesystem is shutting down the connection is
// closed instead.
func (f *filesystem) adopt(c *linkmgr.Conn, flags, uid, gid, pid uint32, log *logrus.Entry) (*connHandle, syscall.Errno) {
	id := c.ID()
	pid = processID(pid)
	e := &connEntry{fsys: f, c: c, id: id, uid: uid, gid: gid, pid: pid, log: log.WithField("conn", id)}
	f.mu.Lock()
	if f.closing {
		f.mu.Unlock()
		_ = c.Close()
		return nil, syscall.ECONNABORTED
	}
	f.conns[id] = e
	f.mu.Unlock()
	h, _ := e.newHandle(flags)
	info := c.Info()
	e.log.WithFields(logrus.Fields{"local": info.Local.String(), "remote": info.Remote.String(), "uid": uid}).Info("connection opened")
	return h, 0
}

// processID returns the process (thread group) that thread tid belongs
// to. FUSE requests carry the id of the calling thread; status shows the
// process, which is what a shell's $$ is. If /proc does not say, tid is
// returned as it is.
func processID(tid uint32) uint32 {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return tid
	}
	if tgid, ok := parseTgid(b); ok {
		return tgid
	}
	return tid
}

// parseTgid finds the "Tgid:" line of /proc/<pid>/status.
func parseTgid(status []byte) (uint32, bool) {
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		rest, found := bytes.CutPrefix(line, []byte("Tgid:"))
		if !found {
			continue
		}
		v, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 10, 32)
		if err != nil {
			return 0, false
		}
		return uint32(v), true
	}
	return 0, false
}

// entry returns the connection opened through this filesystem with id, or
// nil.
func (f *filesystem) entry(id uint64) *connEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns[id]
}

// newHandle adds a handle with the access mode of flags. It fails with
// ENOENT once the connection has been closed by its last handle.
func (e *connEntry) newHandle(flags uint32) (*connHandle, syscall.Errno) {
	h := &connHandle{e: e}
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		h.canRead = true
	case syscall.O_WRONLY:
		h.canWrite = true
	default:
		h.canRead, h.canWrite = true, true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.finished {
		return nil, syscall.ENOENT
	}
	e.handles++
	if h.canRead {
		e.readers++
	}
	if h.canWrite {
		e.writers++
	}
	return h, 0
}

// release drops h's counts and shuts down or closes the connection when
// that was the last writer or the last handle.
func (e *connEntry) release(h *connHandle) {
	e.mu.Lock()
	e.handles--
	if h.canRead {
		e.readers--
	}
	var closeWrite, closeAll bool
	if h.canWrite {
		e.writers--
		if e.writers == 0 && e.handles > 0 && !e.shutWr {
			e.shutWr = true
			closeWrite = true
		}
	}
	if e.handles == 0 && !e.finished {
		e.finished = true
		closeAll = true
	}
	e.mu.Unlock()

	if closeWrite {
		if err := e.c.CloseWrite(); err != nil {
			e.log.WithError(err).Debug("shutdown after last writer")
		} else {
			e.log.Debug("last writer closed: sending side shut down")
		}
	}
	if closeAll {
		f := e.fsys
		f.mu.Lock()
		if f.conns[e.id] == e {
			delete(f.conns, e.id)
		}
		f.mu.Unlock()
		if err := e.c.Close(); err != nil {
			e.log.WithError(err).Debug("close after last handle")
		}
		e.log.Info("connection closed")
		f.poke()
	}
}

// markShutWr records a shutdown requested through ctl.
func (e *connEntry) markShutWr() {
	e.mu.Lock()
	e.shutWr = true
	e.mu.Unlock()
}

// counts returns the handle counts for status.
func (e *connEntry) counts() (readers, writers int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.readers, e.writers
}

// connHandle is one open of a connection. Operations hold mu for reading
// for as long as they run; Release takes it for writing and sets released,
// so a call that races with Release either completes or gets EBADF.
type connHandle struct {
	e        *connEntry
	canRead  bool
	canWrite bool

	mu       sync.RWMutex
	released bool
}

var (
	_ fs.FileReader   = (*connHandle)(nil)
	_ fs.FileWriter   = (*connHandle)(nil)
	_ fs.FileReleaser = (*connHandle)(nil)
)

// Read returns what the connection has (a short read, as from a pipe),
// blocking while it has nothing. 0 bytes means the peer shut down its
// sending side and everything was read.
func (h *connHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.released {
		return nil, syscall.EBADF
	}
	if len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	for {
		n, err := h.e.c.ReadContext(ctx, dest)
		if n > 0 {
			// Data already taken off the connection is never dropped:
			// an error that came with it shows up on the next read.
			return fuse.ReadResultData(dest[:n]), 0
		}
		switch {
		case err == nil:
			// A zero-byte read without an error is not EOF; wait again
			// unless the request was interrupted meanwhile.
			if ctx.Err() != nil {
				return nil, syscall.EINTR
			}
			continue
		case errors.Is(err, io.EOF):
			return fuse.ReadResultData(nil), 0
		case errors.Is(err, net.ErrClosed) && h.e.fsys.shuttingDown():
			// Shutdown closed the connection under us: end the stream.
			return fuse.ReadResultData(nil), 0
		}
		return nil, fail(h.e.log, opRead, err)
	}
}

// Write sends data, blocking while the peer has no room. A write cut
// short by an interrupt or an error returns the part that was sent.
func (h *connHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.released {
		return 0, syscall.EBADF
	}
	n, err := h.e.c.WriteContext(ctx, data)
	if n > 0 || err == nil {
		if err != nil {
			h.e.log.WithError(err).WithField("op", opWrite).Debug("short write")
		}
		return uint32(n), 0
	}
	return 0, fail(h.e.log, opWrite, err)
}

// Release runs when the last file descriptor of this open is closed.
func (h *connHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return syscall.EBADF
	}
	h.released = true
	h.mu.Unlock()
	h.e.release(h)
	return 0
}
