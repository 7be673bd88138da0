//go:build linux

package shm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"idcfs/vchan"
)

// mapping is a run of grant pages mapped contiguously. mem is the exact
// slice unix.Mmap returned for the reservation; the grant files are mapped
// over it page by page with MAP_FIXED, and Close unmaps it as a whole.
type mapping struct {
	b        *Backend
	mem      []byte
	refs     []uint32
	inos     []uint64    // inode of each page's grant file
	granter  vchan.DomID // b.self for a shared mapping
	writable bool
	files    []string // shared mapping: grant files to unlink at Close

	mu     sync.Mutex
	closed bool
	notify *unmapNotify
}

type unmapNotify struct {
	n   notice
	off int // byte offset in mem
	ch  *evtChan
}

var _ vchan.Mapping = (*mapping)(nil)

// reserve returns n pages of inaccessible address space to map grants over.
func reserve(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n*pageSize, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
}

// Share creates npages zeroed one-page grant files for domain peer, maps them
// read-write as one buffer and returns it. Refs are the lowest free refs of
// this domain (from 8 up).
func (b *Backend) Share(peer vchan.DomID, npages int) (vchan.Mapping, error) {
	if err := b.checkPeer("share", peer); err != nil {
		return nil, err
	}
	if npages < 1 || npages > maxGrants {
		return nil, fmt.Errorf("shm: share %d pages with %d: %w", npages, peer, ErrBadCount)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("shm: share: %w", os.ErrClosed)
	}
	refs, err := b.allocRefsLocked(npages)
	b.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("shm: share %d pages with %d: %w", npages, peer, err)
	}
	m, err := b.share(peer, refs)
	if err != nil {
		b.freeRefs(refs)
		return nil, fmt.Errorf("shm: share %d pages with %d: %w", npages, peer, err)
	}
	return m, nil
}

func (b *Backend) share(peer vchan.DomID, refs []uint32) (*mapping, error) {
	mem, err := reserve(len(refs))
	if err != nil {
		return nil, err
	}
	m := &mapping{b: b, mem: mem, refs: refs, granter: b.self, writable: true}
	dir := b.gntDir(b.self)
	fail := func(err error) (*mapping, error) {
		for _, f := range m.files {
			os.Remove(f)
		}
		unix.Munmap(mem)
		return nil, err
	}
	for i, r := range refs {
		path := filepath.Join(dir, grantName(r, peer))
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fail(err)
		}
		m.files = append(m.files, path)
		var ino uint64
		ino, err = inode(f)
		m.inos = append(m.inos, ino)
		if err == nil {
			err = f.Truncate(pageSize)
		}
		if err == nil {
			err = mapFile(f, unsafe.Pointer(&mem[i*pageSize]), unix.PROT_READ|unix.PROT_WRITE)
		}
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("map %s: %w", path, err))
		}
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fail(os.ErrClosed)
	}
	b.registerLocked(m)
	b.mu.Unlock()
	return m, nil
}

// mapFile maps the one page of f at addr.
func mapFile(f *os.File, addr unsafe.Pointer, prot int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var merr error
	if err := rc.Control(func(fd uintptr) {
		merr = mapFixed(addr, int(fd), prot)
	}); err != nil {
		return err
	}
	return merr
}

// Map maps the pages that domain peer granted to this domain under refs, in
// order. A ref granted to another domain gives ErrNotGrantee, an unknown one
// ErrNoGrant, a file that is not a one-page regular file ErrBadGrant.
func (b *Backend) Map(peer vchan.DomID, refs []uint32, writable bool) (vchan.Mapping, error) {
	if err := b.checkPeer("map", peer); err != nil {
		return nil, err
	}
	if len(refs) < 1 || len(refs) > maxMapPages {
		return nil, fmt.Errorf("shm: map %d pages of %d: %w", len(refs), peer, ErrBadCount)
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("shm: map: %w", os.ErrClosed)
	}
	mem, err := reserve(len(refs))
	if err != nil {
		return nil, fmt.Errorf("shm: map %d pages of %d: %w", len(refs), peer, err)
	}
	prot, flag := unix.PROT_READ, os.O_RDONLY
	if writable {
		prot, flag = unix.PROT_READ|unix.PROT_WRITE, os.O_RDWR
	}
	dir := b.gntDir(peer)
	inos := make([]uint64, len(refs))
	for i, r := range refs {
		ino, err := b.mapOne(dir, r, flag, prot, unsafe.Pointer(&mem[i*pageSize]))
		if err != nil {
			unix.Munmap(mem)
			return nil, fmt.Errorf("shm: map ref %d of domain %d: %w", r, peer, err)
		}
		inos[i] = ino
	}
	m := &mapping{b: b, mem: mem, refs: append([]uint32(nil), refs...), inos: inos, granter: peer, writable: writable}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		unix.Munmap(mem)
		return nil, fmt.Errorf("shm: map: %w", os.ErrClosed)
	}
	b.registerLocked(m)
	b.mu.Unlock()
	return m, nil
}

// mapOne maps the grant file of ref over addr and returns its inode.
func (b *Backend) mapOne(dir string, ref uint32, flag, prot int, addr unsafe.Pointer) (uint64, error) {
	if ref == 0 {
		return 0, ErrNoGrant
	}
	path := filepath.Join(dir, grantName(ref, b.self))
	// O_NONBLOCK: a FIFO planted in the directory must not block us.
	f, err := os.OpenFile(path, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if grantedToOther(dir, ref) {
				return 0, ErrNotGrantee
			}
			return 0, ErrNoGrant
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENXIO) {
			return 0, fmt.Errorf("%w: %v", ErrBadGrant, err)
		}
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !st.Mode().IsRegular() || st.Size() != pageSize {
		return 0, fmt.Errorf("%w: %s (%v, %d bytes)", ErrBadGrant, path, st.Mode().Type(), st.Size())
	}
	ino, err := inode(f)
	if err != nil {
		return 0, err
	}
	return ino, mapFile(f, addr, prot)
}

// inode is the inode number of f.
func inode(f *os.File) (uint64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("no inode number for %s", f.Name())
	}
	return sys.Ino, nil
}

// grantedToOther reports whether dir has ref granted to some domain.
func grantedToOther(dir string, ref uint32) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	prefix := strconv.FormatUint(uint64(ref), 10) + "@"
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			return true
		}
	}
	return false
}

// Bytes is the mapped memory.
func (m *mapping) Bytes() []byte { return m.mem }

// Refs are the grant refs of the pages, in order.
func (m *mapping) Refs() []uint32 { return m.refs }

// SetUnmapNotify arranges that when m is closed, or this process dies, the
// byte at offset is cleared and an event is sent on ch, which must be an
// event channel of the same Backend. A later call replaces the earlier one.
func (m *mapping) SetUnmapNotify(offset int, ch vchan.EventChannel) error {
	c, ok := ch.(*evtChan)
	if !ok || c.b != m.b {
		return fmt.Errorf("shm: unmap notify: %w", ErrForeignChannel)
	}
	if offset < 0 || offset >= len(m.mem) {
		return fmt.Errorf("shm: unmap notify at %d of %d bytes: %w", offset, len(m.mem), ErrBadOffset)
	}
	if !m.writable {
		return fmt.Errorf("shm: unmap notify: %w", ErrReadOnly)
	}
	n := notice{
		granter: uint16(m.granter),
		offset:  uint16(offset % pageSize),
		ref:     m.refs[offset/pageSize],
		ino:     m.inos[offset/pageSize],
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("shm: unmap notify: %w", os.ErrClosed)
	}
	if err := c.addNotice(n); err != nil {
		return fmt.Errorf("shm: unmap notify: %w", err)
	}
	if old := m.notify; old != nil {
		old.ch.removeNotice(old.n)
		old.ch.release()
	}
	m.notify = &unmapNotify{n: n, off: offset, ch: c}
	return nil
}

// Close fires the unmap notify, if any (clear the byte, send the event),
// unmaps the pages and, for a shared mapping, revokes the grants: their
// files are unlinked, peers that mapped them keep their mapping.
func (m *mapping) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	nt := m.notify
	m.notify = nil
	m.mu.Unlock()

	b := m.b
	b.mu.Lock()
	b.unregisterLocked(m)
	b.mu.Unlock()

	if nt != nil {
		clearByteAt(m.mem, nt.off)
		nt.ch.removeNotice(nt.n)
		nt.ch.kick()
		nt.ch.release()
	}
	err := unix.Munmap(m.mem)
	for _, f := range m.files {
		if rerr := os.Remove(f); rerr != nil && err == nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}
	if m.granter == b.self && m.files != nil {
		b.freeRefs(m.refs)
	}
	if err != nil {
		return fmt.Errorf("shm: unmap: %w", err)
	}
	return nil
}
