// Package shm is a vchan.Backend for a simulated Xen host on plain Linux.
//
// A simulated host is a directory shared by the processes that play its
// domains; each domain is one Backend (Open), normally one process per
// domain. Memory really is shared between the processes, so the ring code in
// package vchan runs unchanged, byte for byte, across a process boundary.
//
// Grants: a grant is one 4096-byte file, dir/gnt/<granter>/<ref>@<grantee>,
// mapped MAP_SHARED. Share creates the files and maps them contiguously; Map
// opens the files named for this domain only (another domain's grant is
// refused with ErrNotGrantee, a missing one with ErrNoGrant). Closing a
// shared Mapping unlinks its files; processes that mapped them keep their
// mapping, as with gntalloc's dealloc-after-map.
//
// Event channels: a port allocated with AllocUnbound listens on the Unix
// stream socket dir/evtchn/<domain>/<port> and accepts one binder from the
// named peer domain at a time; Bind connects to it. In the handshake each
// end passes the other an eventfd (SCM_RIGHTS), checked to be exactly one
// eventfd: Notify adds 1 to the peer's eventfd, one non-blocking write, and
// Wait reads the channel's own eventfd on the runtime poller, so an event
// wakes the waiting goroutine directly. The socket carries unmap-notify
// registrations and a goodbye, so that when a process dies (the socket ends
// without goodbye) its peer clears the liveness byte and raises the event on
// its behalf, which is what Xen's kernel drivers do. Each channel owns one
// goroutine that reads its socket (and, for a listening port, accepts
// binders), stopped by Close.
//
// dir/dom/<domain>.lock is held (flock) by the Backend of that domain, so a
// host has at most one Backend per domain, and a domain's leftover files are
// provably stale when its lock is free; Open removes them.
//
// The package is Linux-only (mmap with MAP_FIXED, Unix sockets, eventfd); see
// docs/vchan-shm.md for the layout, the event-socket protocol and the limits.
package shm
