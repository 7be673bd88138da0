package shm

import "errors"

var (
	// ErrBadHost is returned by Open when dir exists but is not a simulated
	// host directory of this version.
	ErrBadHost = errors.New("shm: directory is not a simulated Xen host")
	// ErrDomainInUse is returned by Open when another Backend (in this or
	// another process) already plays the domain.
	ErrDomainInUse = errors.New("shm: domain already running on this host")
	// ErrBadDomain is returned for a domain id Xen reserves (>= 0x7FF0).
	ErrBadDomain = errors.New("shm: invalid domain id")
	// ErrBadCount is returned for a page count out of range.
	ErrBadCount = errors.New("shm: page count out of range")
	// ErrNoGrant is returned by Map when the granter has no such grant (the
	// ENOENT/EINVAL of gntdev).
	ErrNoGrant = errors.New("shm: no such grant")
	// ErrNotGrantee is returned by Map when the grant exists but was given
	// to another domain (EPERM).
	ErrNotGrantee = errors.New("shm: grant belongs to another domain")
	// ErrBadGrant is returned by Map when a grant file is not a one-page
	// regular file.
	ErrBadGrant = errors.New("shm: corrupt grant file")
	// ErrNoSpace is returned when a domain's grant table or port table is
	// full.
	ErrNoSpace = errors.New("shm: grant or port table full")
	// ErrReadOnly is returned by SetUnmapNotify on a read-only mapping.
	ErrReadOnly = errors.New("shm: mapping is read-only")
	// ErrBadOffset is returned by SetUnmapNotify for an offset outside the
	// mapping.
	ErrBadOffset = errors.New("shm: offset outside the mapping")
	// ErrForeignChannel is returned by SetUnmapNotify for an event channel
	// that does not belong to the same Backend.
	ErrForeignChannel = errors.New("shm: event channel of another backend")
	// ErrNoPort is returned by Bind when the remote port does not exist or
	// nobody listens on it (Xen's EINVAL/ESRCH).
	ErrNoPort = errors.New("shm: remote port not available")
	// ErrRefused is returned by Bind when the remote port is reserved for
	// another domain or already bound (Xen's EINVAL).
	ErrRefused = errors.New("shm: bind refused by remote port")
	// ErrProtocol is returned (wrapped) when the peer sent something on the
	// event socket that the protocol does not allow, or a handshake without
	// exactly one eventfd. Wait returns it once the channel saw it; the
	// connection is dropped. Bind returns it for a bad handshake reply.
	ErrProtocol = errors.New("shm: peer broke the event-socket protocol")
)
