package xen

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"idcfs/vchan"
	"idcfs/vchan/xen/internal/xendev"
)

// Backend implements vchan.Backend over /dev/xen/gntalloc, /dev/xen/gntdev
// and /dev/xen/evtchn. It is safe for concurrent use. Close it after the
// mappings and channels it made (they keep working without it, but their
// Close then relies on the kernel's cleanup).
type Backend struct {
	dir      string
	gntalloc *device
	gntdev   *device
}

// Open opens the Xen devices in /dev/xen. The error names the missing
// device when one is absent (a *DeviceError).
func Open() (*Backend, error) {
	return openDir(DevDir)
}

func openDir(dir string) (*Backend, error) {
	// Event channel files are opened per channel; check now that the
	// device is there so the error comes from Open.
	ev, err := openDevice(filepath.Join(dir, "evtchn"), true)
	if err != nil {
		return nil, err
	}
	if err := ev.f.Close(); err != nil {
		return nil, &DeviceError{Path: ev.path, Err: err}
	}
	ga, err := openDevice(filepath.Join(dir, "gntalloc"), false)
	if err != nil {
		return nil, err
	}
	gd, err := openDevice(filepath.Join(dir, "gntdev"), false)
	if err != nil {
		_ = ga.f.Close() // report the open error
		return nil, err
	}
	return &Backend{dir: dir, gntalloc: ga, gntdev: gd}, nil
}

// Close closes the grant devices. Mappings still open keep their pages
// until they are closed (the kernel holds the device open for them).
func (b *Backend) Close() error {
	return errors.Join(b.gntalloc.close(), b.gntdev.close())
}

// device is an open Xen device file. ioctls run through RawConn.Control so
// that a concurrent Close can never make them hit a reused descriptor.
type device struct {
	path   string
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool
}

func openDevice(path string, nonblock bool) (*device, error) {
	flags := unix.O_RDWR | unix.O_CLOEXEC
	if nonblock {
		flags |= unix.O_NONBLOCK
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		return nil, &DeviceError{Path: path, Err: &os.PathError{Op: "open", Path: path, Err: err}}
	}
	// os.NewFile puts a non-blocking descriptor on the runtime poller
	// when the device supports poll (evtchn does); the File owns fd.
	f := os.NewFile(uintptr(fd), path)
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close() // report the SyscallConn error
		return nil, &DeviceError{Path: path, Err: err}
	}
	return &device{path: path, f: f, rc: rc}, nil
}

// control runs fn with the descriptor. It fails with an error wrapping
// os.ErrClosed once the file is closed.
func (d *device) control(fn func(fd uintptr) error) error {
	var ferr error
	if err := d.rc.Control(func(fd uintptr) { ferr = fn(fd) }); err != nil {
		return d.closedErr(err)
	}
	return ferr
}

// closedErr turns the error RawConn returns for a closed file (which is
// not os.ErrClosed) into one that wraps os.ErrClosed.
func (d *device) closedErr(err error) error {
	if err != nil && d.closed.Load() {
		return &os.PathError{Op: "use", Path: d.path, Err: os.ErrClosed}
	}
	return err
}

func (d *device) close() error {
	d.closed.Store(true)
	if err := d.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

// mmapPages maps npages of fd at the device offset index.
func mmapPages(fd uintptr, index uint64, npages int, writable bool) ([]byte, error) {
	size := npages * vchan.PageSize
	if index%vchan.PageSize != 0 || index > math.MaxInt64-uint64(size) {
		return nil, fmt.Errorf("%w: device offset %#x for %d pages", ErrInvalid, index, npages)
	}
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	// gntdev answers EAGAIN while a granted page is paged out; the C
	// library sleeps a millisecond and retries. Bound the retries.
	for try := 0; ; try++ {
		mem, err := unix.Mmap(int(fd), int64(index), size, prot, unix.MAP_SHARED)
		if err == unix.EAGAIN && try < 100 {
			time.Sleep(time.Millisecond)
			continue
		}
		return mem, err
	}
}

// Share allocates npages zeroed pages granted read-write to domain peer and
// maps them here.
func (b *Backend) Share(peer vchan.DomID, npages int) (vchan.Mapping, error) {
	if err := checkPeer(peer); err != nil {
		return nil, err
	}
	if npages < 1 || npages > MaxSharePages {
		return nil, fmt.Errorf("%w: share of %d pages (1..%d)", ErrInvalid, npages, MaxSharePages)
	}
	var m *mapping
	err := b.gntalloc.control(func(fd uintptr) error {
		index, refs, err := xendev.AllocGref(fd, uint16(peer), true, npages)
		if err != nil {
			return &OpError{Op: "gntalloc ALLOC_GREF", Peer: int(peer), Err: err}
		}
		mem, err := mmapPages(fd, index, npages, true)
		if err != nil {
			// Without DEALLOC the pages would live as long as the fd.
			derr := xendev.DeallocGref(fd, index, npages)
			return errors.Join(&OpError{Op: "gntalloc mmap", Peer: int(peer), Err: err},
				opErr("gntalloc DEALLOC_GREF", int(peer), derr))
		}
		m = &mapping{dev: b.gntalloc, shared: true, peer: peer, mem: mem, refs: refs, index: index, writable: true}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Map maps the pages that domain peer granted under refs, in order, as one
// contiguous buffer. peer must be another domain: mapping this domain's own
// grants back (loopback) corrupted memory in PV guests in our tests (Linux
// 6.1, Xen 4.17).
func (b *Backend) Map(peer vchan.DomID, refs []uint32, writable bool) (vchan.Mapping, error) {
	if err := checkPeer(peer); err != nil {
		return nil, err
	}
	if len(refs) < 1 || len(refs) > MaxMapPages {
		return nil, fmt.Errorf("%w: map of %d pages (1..%d)", ErrInvalid, len(refs), MaxMapPages)
	}
	for i, r := range refs {
		if r == 0 {
			return nil, fmt.Errorf("%w: grant reference %d is 0", ErrInvalid, i)
		}
	}
	var m *mapping
	err := b.gntdev.control(func(fd uintptr) error {
		index, err := xendev.MapGrantRef(fd, uint16(peer), refs)
		if err != nil {
			return &OpError{Op: "gntdev MAP_GRANT_REF", Peer: int(peer), Err: err}
		}
		mem, err := mmapPages(fd, index, len(refs), writable)
		if err != nil {
			uerr := xendev.UnmapGrantRef(fd, index, len(refs))
			return errors.Join(&OpError{Op: "gntdev mmap", Peer: int(peer), Err: err},
				opErr("gntdev UNMAP_GRANT_REF", int(peer), uerr))
		}
		m = &mapping{dev: b.gntdev, peer: peer, mem: mem, refs: append([]uint32(nil), refs...), index: index, writable: writable}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func opErr(op string, peer int, err error) error {
	if err == nil {
		return nil
	}
	return &OpError{Op: op, Peer: peer, Err: err}
}

// mapping is a run of pages shared through gntalloc (shared) or mapped
// through gntdev.
type mapping struct {
	dev      *device
	shared   bool
	peer     vchan.DomID
	mem      []byte // exactly as returned by mmap
	refs     []uint32
	index    uint64 // device offset of the first page
	writable bool

	mu        sync.Mutex
	closed    bool
	notifySet bool
	// dealloc says DEALLOC_GREF was done (shared only). It is deferred
	// until the unmap notify is set, or Close, because the driver finds
	// a page for SET_UNMAP_NOTIFY only while it is in the fd's table.
	dealloc bool
}

var _ vchan.Mapping = (*mapping)(nil)

func (m *mapping) Bytes() []byte  { return m.mem }
func (m *mapping) Refs() []uint32 { return m.refs }

// SetUnmapNotify asks the kernel to zero the byte at offset and signal ch
// when the mapping goes away (Close or process death). ch must come from
// this package and be open; a read-only mapping cannot take a notify.
func (m *mapping) SetUnmapNotify(offset int, ch vchan.EventChannel) error {
	c, ok := ch.(*eventChannel)
	if !ok || c == nil {
		return ErrForeignChannel
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return net.ErrClosed
	case m.notifySet:
		return ErrNotifySet
	case offset < 0 || offset >= len(m.mem):
		return fmt.Errorf("%w: unmap notify offset %d outside %d bytes", ErrInvalid, offset, len(m.mem))
	case !m.writable:
		return fmt.Errorf("%w: unmap notify on a read-only mapping", ErrInvalid)
	}
	port, err := c.openPort()
	if err != nil {
		return err
	}
	const action = xendev.UnmapNotifyClearByte | xendev.UnmapNotifySendEvent
	index := m.index + uint64(offset)
	err = m.dev.control(func(fd uintptr) error {
		if !m.shared {
			return opErr("gntdev SET_UNMAP_NOTIFY", int(m.peer), xendev.GntdevUnmapNotify(fd, index, action, port))
		}
		if err := xendev.GntallocUnmapNotify(fd, index, action, port); err != nil {
			return opErr("gntalloc SET_UNMAP_NOTIFY", int(m.peer), err)
		}
		// Now the mapping alone keeps the pages: munmap, or the death
		// of this process, frees them and fires the notify.
		if err := xendev.DeallocGref(fd, m.index, len(m.refs)); err != nil {
			return opErr("gntalloc DEALLOC_GREF", int(m.peer), err)
		}
		m.dealloc = true
		return nil
	})
	if err != nil {
		return err
	}
	m.notifySet = true
	return nil
}

// Close unmaps the pages. For a shared mapping the grants end once the peer
// unmaps too; for a gntdev mapping the grant handles are released.
func (m *mapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	if m.shared && !m.dealloc {
		err := m.dev.control(func(fd uintptr) error { return xendev.DeallocGref(fd, m.index, len(m.refs)) })
		if err != nil && !errors.Is(err, os.ErrClosed) { // a closed fd freed them already
			errs = append(errs, opErr("gntalloc DEALLOC_GREF", int(m.peer), err))
		}
		m.dealloc = true
	}
	if err := unix.Munmap(m.mem); err != nil {
		errs = append(errs, opErr("munmap", int(m.peer), err))
	}
	if !m.shared {
		err := m.dev.control(func(fd uintptr) error { return xendev.UnmapGrantRef(fd, m.index, len(m.refs)) })
		if err != nil && !errors.Is(err, os.ErrClosed) { // a closed fd released them already
			errs = append(errs, opErr("gntdev UNMAP_GRANT_REF", int(m.peer), err))
		}
	}
	return errors.Join(errs...)
}
