package heap

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"unsafe"

	"idcfs/vchan"
)

// MaxShare bounds the pages of one Share call (two order-20 rings need 256
// each).
const MaxShare = 1024

// Host is a simulated host: a grant table and event channel table shared by
// the domains returned by Domain. It is safe for concurrent use.
type Host struct {
	mu       sync.Mutex
	nextRef  uint32
	grants   map[uint32]*grant
	ports    map[portKey]*eventChannel
	nextPort map[vchan.DomID]uint32
	domains  map[vchan.DomID]*Domain
}

type portKey struct {
	dom  vchan.DomID
	port uint32
}

// grant is one shared page.
type grant struct {
	owner, peer vchan.DomID
	share       *share
	index       int // page number within share
}

// share is the memory of one Share call.
type share struct {
	mem     []byte
	revoked bool // guarded by Host.mu
}

// New returns an empty host.
func New() *Host {
	return &Host{
		grants:   make(map[uint32]*grant),
		ports:    make(map[portKey]*eventChannel),
		nextPort: make(map[vchan.DomID]uint32),
		domains:  make(map[vchan.DomID]*Domain),
	}
}

// Domain is one simulated domain of a Host. It implements vchan.Backend.
type Domain struct {
	h  *Host
	id vchan.DomID
	// Live mappings and ports, guarded by h.mu, for Kill.
	mappings map[*mapping]struct{}
	channels map[*eventChannel]struct{}
}

var _ vchan.Backend = (*Domain)(nil)

// Domain returns the Backend of domain id (the same one on every call).
func (h *Host) Domain(id vchan.DomID) vchan.Backend {
	return h.domain(id)
}

func (h *Host) domain(id vchan.DomID) *Domain {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.domains[id]
	if d == nil {
		d = &Domain{h: h, id: id, mappings: make(map[*mapping]struct{}), channels: make(map[*eventChannel]struct{})}
		h.domains[id] = d
	}
	return d
}

// ID is the domain id.
func (d *Domain) ID() vchan.DomID { return d.id }

// Kill simulates the death of domain id's process: every mapping it holds
// is closed (firing unmap notifies, as the kernel does at exit) and then
// every event channel port it holds is closed. Objects still referenced by
// the dead domain's code keep their memory but fail from now on.
func (h *Host) Kill(id vchan.DomID) {
	d := h.domain(id)
	h.mu.Lock()
	ms := make([]*mapping, 0, len(d.mappings))
	for m := range d.mappings {
		ms = append(ms, m)
	}
	cs := make([]*eventChannel, 0, len(d.channels))
	for c := range d.channels {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, m := range ms {
		_ = m.Close() // nothing to report to a dead process
	}
	for _, c := range cs {
		_ = c.Close()
	}
}

// alignedPages allocates n zeroed pages, 8-byte aligned so that the vchan
// layout's 32-bit words can be used atomically.
func alignedPages(n int) []byte {
	words := make([]uint64, n*vchan.PageSize/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n*vchan.PageSize)
}

// Share allocates npages zeroed pages that peer may map.
func (d *Domain) Share(peer vchan.DomID, npages int) (vchan.Mapping, error) {
	if npages < 1 || npages > MaxShare {
		return nil, fmt.Errorf("%w: share of %d pages", ErrInvalid, npages)
	}
	s := &share{mem: alignedPages(npages)}
	m := &mapping{d: d, mem: s.mem, share: s, notifyOff: -1}
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range npages {
		h.nextRef++
		if h.nextRef == 0 { // refs are never 0
			h.nextRef++
		}
		h.grants[h.nextRef] = &grant{owner: d.id, peer: peer, share: s, index: i}
		m.refs = append(m.refs, h.nextRef)
	}
	d.mappings[m] = struct{}{}
	return m, nil
}

// Map returns the memory that domain peer shared with this domain under
// refs, which must be consecutive pages of one Share call.
func (d *Domain) Map(peer vchan.DomID, refs []uint32, writable bool) (vchan.Mapping, error) {
	if len(refs) < 1 || len(refs) > MaxShare {
		return nil, fmt.Errorf("%w: map of %d pages", ErrInvalid, len(refs))
	}
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	var first *grant
	for i, r := range refs {
		g := h.grants[r]
		if g == nil || g.share.revoked || g.owner != peer || g.peer != d.id {
			return nil, fmt.Errorf("%w: ref %d of domain %d", ErrBadGrant, r, peer)
		}
		if i == 0 {
			first = g
		} else if g.share != first.share || g.index != first.index+i {
			return nil, ErrNotContiguous
		}
	}
	lo, hi := first.index*vchan.PageSize, (first.index+len(refs))*vchan.PageSize
	m := &mapping{d: d, mem: first.share.mem[lo:hi:hi], refs: append([]uint32(nil), refs...), notifyOff: -1}
	d.mappings[m] = struct{}{}
	return m, nil
}

// mapping implements vchan.Mapping.
type mapping struct {
	d     *Domain
	mem   []byte
	refs  []uint32
	share *share // non-nil for the sharing side

	mu        sync.Mutex
	closed    bool
	notifyOff int // -1: none
	notifyCh  vchan.EventChannel
}

var _ vchan.Mapping = (*mapping)(nil)

func (m *mapping) Bytes() []byte  { return m.mem }
func (m *mapping) Refs() []uint32 { return m.refs }

// SetUnmapNotify arranges for Close to clear the byte at offset and notify ch.
func (m *mapping) SetUnmapNotify(offset int, ch vchan.EventChannel) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return net.ErrClosed
	case offset < 0 || offset >= len(m.mem) || ch == nil || m.notifyOff >= 0:
		return fmt.Errorf("%w: unmap notify at %d", ErrInvalid, offset)
	}
	m.notifyOff, m.notifyCh = offset, ch
	return nil
}

// Close fires the unmap notify, if any, and for a shared mapping revokes its
// grants (existing mappings of the peer keep the memory, as on Xen).
func (m *mapping) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	off, ch := m.notifyOff, m.notifyCh
	m.mu.Unlock()
	if off >= 0 {
		clearByte(m.mem, off)
		_ = ch.Notify() // the port may be closed already; the byte is what counts
	}
	h := m.d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(m.d.mappings, m)
	if m.share != nil {
		m.share.revoked = true
		for _, r := range m.refs {
			delete(h.grants, r)
		}
	}
	return nil
}

// clearByte stores 0 into mem[off] with an atomic operation on the aligned
// word that holds it (the peer accesses that word atomically).
func clearByte(mem []byte, off int) {
	w := (*uint32)(unsafe.Pointer(&mem[off&^3:][:4][0])) // mem is 8-byte aligned
	shift := 8 * uint(off&3)                             // little-endian byte order
	atomic.AndUint32(w, ^(uint32(0xff) << shift))
}

// AllocUnbound allocates a port of this domain that peer may bind.
func (d *Domain) AllocUnbound(peer vchan.DomID) (vchan.EventChannel, error) {
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	return d.newPortLocked(peer), nil
}

// Bind binds a new port of this domain to peer's unbound remotePort.
func (d *Domain) Bind(peer vchan.DomID, remotePort uint32) (vchan.EventChannel, error) {
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.ports[portKey{peer, remotePort}]
	if r == nil || r.peer != nil || r.remoteDom != d.id {
		return nil, fmt.Errorf("%w: port %d of domain %d", ErrBadPort, remotePort, peer)
	}
	c := d.newPortLocked(peer)
	c.peer, r.peer = r, c
	c.signal() // Xen marks a freshly bound interdomain port pending
	return c, nil
}

func (d *Domain) newPortLocked(peer vchan.DomID) *eventChannel {
	h := d.h
	h.nextPort[d.id]++
	c := &eventChannel{
		d:         d,
		port:      h.nextPort[d.id],
		remoteDom: peer,
		sig:       make(chan struct{}, 1),
		closed:    make(chan struct{}),
	}
	h.ports[portKey{d.id, c.port}] = c
	d.channels[c] = struct{}{}
	return c
}

// eventChannel implements vchan.EventChannel.
type eventChannel struct {
	d         *Domain
	port      uint32
	remoteDom vchan.DomID
	peer      *eventChannel // bound partner, nil while unbound; guarded by Host.mu
	sig       chan struct{} // 1-buffered: pending events coalesce
	closed    chan struct{}
	isClosed  bool // guarded by Host.mu
}

var _ vchan.EventChannel = (*eventChannel)(nil)

func (c *eventChannel) Port() uint32 { return c.port }

func (c *eventChannel) signal() {
	select {
	case c.sig <- struct{}{}:
	default:
	}
}

// Notify marks the partner's port pending. On an unbound port it does
// nothing, like Xen.
func (c *eventChannel) Notify() error {
	h := c.d.h
	h.mu.Lock()
	closed, p := c.isClosed, c.peer
	h.mu.Unlock()
	if closed {
		return net.ErrClosed
	}
	if p != nil {
		p.signal()
	}
	return nil
}

// Wait blocks until an event is pending (and consumes it), ctx is done, or
// the port is closed.
func (c *eventChannel) Wait(ctx context.Context) error {
	select {
	case <-c.closed:
		return net.ErrClosed
	default:
	}
	select {
	case <-c.sig:
		return nil
	case <-c.closed:
		return net.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close unbinds the port (the partner becomes unbound again) and wakes a
// pending Wait. Closing twice is a no-op.
func (c *eventChannel) Close() error {
	h := c.d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.isClosed {
		return nil
	}
	c.isClosed = true
	if c.peer != nil {
		c.peer.peer = nil
		c.peer = nil
	}
	delete(h.ports, portKey{c.d.id, c.port})
	delete(c.d.channels, c)
	close(c.closed)
	return nil
}
