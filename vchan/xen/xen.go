package xen

import (
	"fmt"

	"idcfs/vchan"
	"idcfs/vchan/xen/internal/xendev"
)

// DevDir is where Linux creates the Xen device nodes.
const DevDir = "/dev/xen"

// MaxSharePages bounds one Share call: the gntalloc driver's default limit
// for the whole domain.
const MaxSharePages = xendev.MaxGntallocPages

// MaxMapPages bounds one Map call (the gntdev driver's per-request limit).
const MaxMapPages = xendev.MaxGntdevRefs

var _ vchan.Backend = (*Backend)(nil)

// checkPeer rejects domain ids that name no real domain.
func checkPeer(peer vchan.DomID) error {
	if peer >= xendev.DomidFirstReserved {
		return fmt.Errorf("%w: domain id %d is reserved", ErrInvalid, peer)
	}
	return nil
}
