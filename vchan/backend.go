package vchan

import "context"

// DomID is a Xen domain id (domid_t).
type DomID uint16

// PageSize is the size of one shared page (a grant) on every supported target.
const PageSize = 4096

// Backend is what a ring endpoint needs from the platform: shared pages and
// event channels. The Xen backend implements it over /dev/xen/gntalloc,
// /dev/xen/gntdev and /dev/xen/evtchn; the shm backend over files and Unix
// sockets in a directory shared by the processes of a simulated host; the heap
// backend inside one process.
type Backend interface {
	Memory
	Events
}

// Memory shares pages with another domain and maps pages it shared.
type Memory interface {
	// Share allocates npages zeroed pages that domain peer may map
	// read-write, and maps them here. The pages' grant references are
	// Mapping.Refs, in order.
	Share(peer DomID, npages int) (Mapping, error)
	// Map maps the pages that domain peer granted under refs, in order, as
	// one contiguous buffer. Writable selects PROT_READ|PROT_WRITE.
	Map(peer DomID, refs []uint32, writable bool) (Mapping, error)
}

// Mapping is a run of shared pages mapped into this process.
type Mapping interface {
	// Bytes is the mapped memory, len = pages*PageSize. It is valid until
	// Close; the peer may change it at any time.
	Bytes() []byte
	// Refs are the grant references of the pages (for a shared mapping), or
	// the references that were mapped.
	Refs() []uint32
	// SetUnmapNotify asks that when this mapping goes away, by Close or by
	// the death of this process, the byte at offset is set to 0 and an
	// event is sent on ch (libxenvchan's liveness byte). At most one
	// notify per mapping.
	SetUnmapNotify(offset int, ch EventChannel) error
	// Close unmaps the pages (and, for a shared mapping, revokes them).
	Close() error
}

// Events allocates and binds inter-domain event channels.
type Events interface {
	// AllocUnbound allocates a local port that domain peer may bind to.
	AllocUnbound(peer DomID) (EventChannel, error)
	// Bind binds a local port to remotePort of domain peer.
	Bind(peer DomID, remotePort uint32) (EventChannel, error)
}

// EventChannel is one end of an event channel. Events carry no data,
// coalesce, and may be spurious.
type EventChannel interface {
	// Port is the local port number (what the server publishes).
	Port() uint32
	// Notify sends an event to the other end.
	Notify() error
	// Wait blocks until at least one event arrived since the previous Wait
	// returned, ctx is done (it returns ctx.Err()) or the channel is closed
	// (it returns net.ErrClosed).
	Wait(ctx context.Context) error
	// Close unbinds the port. It wakes a pending Wait.
	Close() error
}

// Store is where a server publishes its ring and a client finds it:
// Xenstore on Xen. Implementations write path/ring-ref and
// path/event-channel as ASCII decimal, readable by the peer domain.
type Store interface {
	// Publish writes both keys under path (in one transaction where the
	// store has them) so that domain peer may read them.
	Publish(ctx context.Context, path string, peer DomID, ringRef, port uint32) error
	// Lookup reads both keys under path.
	Lookup(ctx context.Context, path string) (ringRef, port uint32, err error)
	// Remove deletes path and everything under it.
	Remove(ctx context.Context, path string) error
}
