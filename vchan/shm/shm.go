//go:build linux

package shm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"idcfs/vchan"
)

// Backend is the shm backend for one simulated domain. It implements
// vchan.Backend. All methods are safe for concurrent use.
type Backend struct {
	dir  string
	self vchan.DomID
	lock *os.File // flock'ed dir/dom/<self>.lock

	mu       sync.Mutex
	closed   bool
	refs     map[uint32]bool       // grant refs in use by this domain
	ports    map[uint32]*evtChan   // local ports in use
	mappings map[*mapping]bool     // open mappings, shared and mapped
	byGrant  map[grantKey][]pageOf // writable open mappings of each page, for death notices
}

// pageOf is page idx of mapping m.
type pageOf struct {
	m   *mapping
	idx int
}

// grantKey names one granted page on the host: the ref, and the inode of
// its file, which tells it apart from an earlier grant under the same ref.
type grantKey struct {
	granter vchan.DomID
	ref     uint32
	ino     uint64
}

var _ vchan.Backend = (*Backend)(nil)

// Open returns the backend of domain self on the simulated host in dir,
// creating the host directory if it does not exist. Only one Backend per
// domain can be open on a host at a time (ErrDomainInUse); files left behind
// by an earlier, dead Backend of the same domain are removed. Close releases
// the domain.
func Open(dir string, self vchan.DomID) (*Backend, error) {
	if self >= domidFirstReserved {
		return nil, fmt.Errorf("shm: open domain %d: %w", self, ErrBadDomain)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("shm: open %s: %w", dir, err)
	}
	if err := initHost(abs); err != nil {
		return nil, err
	}
	d := strconv.Itoa(int(self))
	lockPath := filepath.Join(abs, "dom", d+".lock")
	lock, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shm: open domain %d: %w", self, err)
	}
	if err := flockNB(lock); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("shm: open domain %d in %s: %w", self, abs, ErrDomainInUse)
		}
		return nil, fmt.Errorf("shm: lock domain %d: %w", self, err)
	}
	// We hold the lock: whatever a previous incarnation of this domain
	// left is stale. Peers that still map its pages keep them.
	for _, sub := range []string{"gnt", "evtchn"} {
		p := filepath.Join(abs, sub, d)
		if err := os.RemoveAll(p); err != nil {
			lock.Close()
			return nil, fmt.Errorf("shm: remove stale %s: %w", p, err)
		}
		if err := os.MkdirAll(p, 0o700); err != nil {
			lock.Close()
			return nil, fmt.Errorf("shm: open domain %d: %w", self, err)
		}
	}
	return &Backend{
		dir:      abs,
		self:     self,
		lock:     lock,
		refs:     make(map[uint32]bool),
		ports:    make(map[uint32]*evtChan),
		mappings: make(map[*mapping]bool),
		byGrant:  make(map[grantKey][]pageOf),
	}, nil
}

// initHost creates the host directory or checks that dir is one.
func initHost(dir string) error {
	for _, sub := range []string{"", "dom", "gnt", "evtchn"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return fmt.Errorf("shm: create host %s: %w", dir, err)
		}
	}
	marker := filepath.Join(dir, hostMarker)
	b, err := os.ReadFile(marker)
	if errors.Is(err, fs.ErrNotExist) {
		if err := writeMarker(dir, marker); err != nil {
			return fmt.Errorf("shm: create host %s: %w", dir, err)
		}
		b, err = os.ReadFile(marker)
	}
	if err != nil {
		return fmt.Errorf("shm: read host marker: %w", err)
	}
	if string(b) != hostMarkerText {
		return fmt.Errorf("shm: %s: %w (marker %.40q)", dir, ErrBadHost, b)
	}
	return nil
}

// writeMarker writes a temporary file and links it into place, so that a
// process racing with us never reads a half-written marker. Losing the race
// is fine: the caller reads what the winner wrote.
func writeMarker(dir, marker string) error {
	tmp, err := os.CreateTemp(dir, ".xenhost-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hostMarkerText)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), marker)
	}
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	return err
}

func flockNB(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// Domain is the simulated domain this Backend plays.
func (b *Backend) Domain() vchan.DomID { return b.self }

// Dir is the host directory (absolute).
func (b *Backend) Dir() string { return b.dir }

// Close closes every event channel and mapping still open (the way process
// exit would: unmap notifies fire), removes the domain's files and releases
// the domain. The Bytes of mappings must not be used after Close.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	var maps []*mapping
	for m := range b.mappings {
		maps = append(maps, m)
	}
	var chans []*evtChan
	for _, c := range b.ports {
		chans = append(chans, c)
	}
	b.mu.Unlock()
	for _, m := range maps {
		m.Close()
	}
	for _, c := range chans {
		c.Close()
	}
	// Channels kept open only for a notify are released by the mapping
	// closes above; wait for their goroutines.
	for _, c := range chans {
		c.wg.Wait()
	}
	d := strconv.Itoa(int(b.self))
	os.RemoveAll(filepath.Join(b.dir, "gnt", d))
	os.RemoveAll(filepath.Join(b.dir, "evtchn", d))
	return b.lock.Close()
}

func (b *Backend) checkPeer(op string, peer vchan.DomID) error {
	if peer >= domidFirstReserved {
		return fmt.Errorf("shm: %s peer %d: %w", op, peer, ErrBadDomain)
	}
	return nil
}

// allocRefsLocked reserves n grant refs, lowest free first.
func (b *Backend) allocRefsLocked(n int) ([]uint32, error) {
	if len(b.refs)+n > maxGrants {
		return nil, ErrNoSpace
	}
	out := make([]uint32, 0, n)
	for r := uint32(firstRef); len(out) < n; r++ {
		if !b.refs[r] {
			b.refs[r] = true
			out = append(out, r)
		}
	}
	return out, nil
}

func (b *Backend) freeRefs(refs []uint32) {
	b.mu.Lock()
	for _, r := range refs {
		delete(b.refs, r)
	}
	b.mu.Unlock()
}

// clearByte carries out a dead peer's unmap notify: it clears byte off of
// the page granter/ref in one of our mappings of that page, if we have one.
func (b *Backend) clearByte(n notice) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	pages := b.byGrant[grantKey{vchan.DomID(n.granter), n.ref, n.ino}]
	if len(pages) == 0 {
		return false
	}
	// All mappings of a page share its memory: one clear is enough.
	p := pages[0]
	clearByteAt(p.m.mem, p.idx*pageSize+int(n.offset))
	return true
}

// registerLocked records the pages of a writable mapping for clearByte.
func (b *Backend) registerLocked(m *mapping) {
	b.mappings[m] = true
	if !m.writable {
		return
	}
	for i, r := range m.refs {
		k := grantKey{m.granter, r, m.inos[i]}
		b.byGrant[k] = append(b.byGrant[k], pageOf{m, i})
	}
}

// unregisterLocked forgets m; after it, clearByte no longer touches m.mem.
func (b *Backend) unregisterLocked(m *mapping) {
	delete(b.mappings, m)
	if !m.writable {
		return
	}
	for i, r := range m.refs {
		k := grantKey{m.granter, r, m.inos[i]}
		old := b.byGrant[k]
		kept := old[:0]
		for _, p := range old {
			if p.m != m {
				kept = append(kept, p)
			}
		}
		if len(kept) == 0 {
			delete(b.byGrant, k)
		} else {
			b.byGrant[k] = kept
		}
	}
}

func (b *Backend) gntDir(granter vchan.DomID) string {
	return filepath.Join(b.dir, "gnt", strconv.Itoa(int(granter)))
}

func grantName(ref uint32, grantee vchan.DomID) string {
	return strconv.FormatUint(uint64(ref), 10) + "@" + strconv.Itoa(int(grantee))
}

func (b *Backend) portPath(dom vchan.DomID, port uint32) string {
	return filepath.Join(b.dir, "evtchn", strconv.Itoa(int(dom)), strconv.FormatUint(uint64(port), 10))
}
