// Package xen is the vchan Backend for a Linux Xen domain, in pure Go over
// the kernel's Xen devices:
//
//   - /dev/xen/gntalloc shares pages of this domain with a peer
//     (Backend.Share: ALLOC_GREF, mmap, SET_UNMAP_NOTIFY, DEALLOC_GREF);
//   - /dev/xen/gntdev maps pages a peer granted (Backend.Map:
//     MAP_GRANT_REF, one mmap for all refs, SET_UNMAP_NOTIFY,
//     UNMAP_GRANT_REF on Close);
//   - /dev/xen/evtchn carries event channels (Backend.AllocUnbound and
//     Backend.Bind). Each channel has its own evtchn file descriptor on the
//     runtime poller, so EventChannel.Wait reads only its own port and
//     honours its context without a goroutine per wait.
//
// The byte layouts and request numbers live in internal/xendev. The package
// does not talk to Xenstore and does not know the ring layout: that is
// package vchan's job.
//
// Open needs the xen-gntalloc, xen-gntdev and xen-evtchn kernel modules
// (built into most Xen-enabled kernels) and, in practice, root.
package xen
