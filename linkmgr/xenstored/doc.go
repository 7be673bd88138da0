// Package xenstored is a small embedded Xenstore server for hosts without
// Xen: the simulated host of `idcfs sim`, the tests, and development.
//
// It speaks the Xenstore wire protocol (the codec is idcfs/linkmgr/xenstore)
// on Unix sockets. Every connection accepted on a socket speaks for one
// domain, fixed when the socket is set up with Listen or Serve; domain 0 is
// privileged and bypasses permission checks, as a dom0 socket connection to
// the real xenstored does. Domains appear and disappear through the Go API
// (IntroduceDomain, ReleaseDomain), which does what the Xen toolstack and
// hypervisor do for a real domain.
//
// It aims to be small and faithful rather than complete: one tree with
// per-node permissions enforced as the C xenstored enforces them, optimistic
// transactions that fail with EAGAIN at commit on conflict, watches on
// subtrees and on @introduceDomain and @releaseDomain filtered by read
// permission, and the payload, path and per-domain limits of the C daemon.
// docs/xenstored.md lists what it leaves out.
//
// A Server owns its listener, connection and writer goroutines; Close stops
// them and waits for them.
package xenstored
