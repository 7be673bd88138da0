// Package heap is an in-process vchan.Backend: simulated domains of one
// simulated host share ordinary Go heap memory, so both ends of a ring run in
// one process and the race detector sees every access from either side.
//
// New returns a Host; Host.Domain(id) is the Backend of domain id. Grant
// references are sequential integers kept in a table (never 0, never
// reused); Map of a ref returns the very same memory that Share allocated,
// and only the domain the pages were shared with may map them. Event
// channels are bound pairwise like Xen's: AllocUnbound in one domain, Bind
// from the named peer; events coalesce (a 1-buffered channel per port), a
// freshly bound port starts with one pending (spurious) event as on Xen, and
// closing one end turns the other back into an unbound port that the same
// peer domain may bind again. Closing a mapping honours SetUnmapNotify
// (clear the byte, send the event), and Host.Kill simulates the death of a
// domain's process by closing all of its mappings and ports.
//
// Differences from Xen, by design: memory is never really unmapped (a
// closed mapping's Bytes stay valid, which is harmless because a vchan
// endpoint stops touching them), read-only mappings are not enforced, and
// Map needs the refs of one Share call in order (so that the pages are one
// contiguous buffer, as libxenvchan always maps them).
//
// NewStore is an in-memory vchan.Store for the same tests.
package heap
